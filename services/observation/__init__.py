"""What a policy sees: the Obs V3 feature builder (reference/tamiyo_simic.md §1). Kasmina builds every step's
observation with it; Simic rebuilds one from a step's post-mutation slot states. The layout's widths are
`leyline_schemas.observation`'s; the action-mask rules are `leyline_schemas.heads`.

A shared library: pure (no torch, no NATS); imports leyline_schemas only, and no service.
"""
