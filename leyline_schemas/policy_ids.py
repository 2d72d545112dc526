"""The policy ids every Tamiyo serves without weights, and the suffix that asks for a line's greedy decisions."""

from __future__ import annotations

from leyline_schemas.enums import PolicyKind

#: The rule-based policies, by the id runs name them with.
BUILTIN_POLICY_IDS: dict[str, PolicyKind] = {
    "heuristic": PolicyKind.HEURISTIC,
    "random": PolicyKind.RANDOM,
    "wait": PolicyKind.WAIT,
}
HEURISTIC_POLICY_ID = "heuristic"
#: `<line>+greedy` serves a line's argmax decisions (reference/tamiyo_simic.md §4.9): how trained lines are evaluated.
GREEDY_SUFFIX = "+greedy"
