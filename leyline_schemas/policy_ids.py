"""The policy ids every Tamiyo serves without weights, and the suffix that asks for a line's greedy decisions."""

from __future__ import annotations

from leyline_schemas.enums import PolicyKind

#: The rule-based policies, by the id runs name them with.
BUILTIN_POLICY_IDS: dict[str, PolicyKind] = {
    "heuristic": PolicyKind.HEURISTIC,
    #: The heuristic with conv_heavy's place in the rotation given to conv_ladder, which it grows (kasmina2 §7.2).
    "heuristic-ladder": PolicyKind.HEURISTIC,
    "random": PolicyKind.RANDOM,
    "wait": PolicyKind.WAIT,
    "fixed-germinate-r0c0-v1": PolicyKind.SCHEDULE,
}
#: The built-in fixed lifecycle schedule (services/tamiyo/schedules.py), the proof experiment's fixed-schedule control.
FIXED_SCHEDULE_POLICY_ID = "fixed-germinate-r0c0-v1"
HEURISTIC_POLICY_ID = "heuristic"
HEURISTIC_LADDER_POLICY_ID = "heuristic-ladder"
#: `<line>+greedy` serves a line's argmax decisions (reference/tamiyo_simic.md §4.9): how trained lines are evaluated.
GREEDY_SUFFIX = "+greedy"
