"""What a report says produced it: every environment setting in its command (secrets left out), and the proof
command's PPO flags reaching the learner's environment exactly as given."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from services.experiments.commands import policy_size_env, register_proof
from services.experiments.proof_command import learner_env
from services.experiments.provenance import provenance, provenance_markdown


def test_the_command_carries_every_setting_from_the_environment_and_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESPER_LEARNING_RATE", "2e-3")
    monkeypatch.setenv("ESPER_NATS_PASSWORD", "hunter2")
    monkeypatch.setenv("ESPER_NATS_CREDS", "/secret/creds")
    info = provenance(["/x/.venv/bin/esper", "experiment", "proof", "--seeds", "5"])
    assert "ESPER_LEARNING_RATE=2e-3 " in info["command"]
    assert info["command"].endswith("esper experiment proof --seeds 5")
    assert "hunter2" not in info["command"] and "/secret/creds" not in info["command"]


def test_without_settings_in_the_environment_the_command_is_the_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ESPER_")]:
        monkeypatch.delenv(key)
    assert provenance(["esper", "experiment", "proof"])["command"] == "esper experiment proof"


def test_a_report_says_how_busy_the_machine_was() -> None:
    one_minute = os.getloadavg()[0]
    info = provenance(["esper", "bench", "all"])
    assert re.fullmatch(r"up \d+ min, load \d+\.\d\d / \d+\.\d\d / \d+\.\d\d", info["load"]), info["load"]
    assert abs(float(info["load"].split()[4]) - one_minute) < 2.0
    assert info["load"] in provenance_markdown(info)


def _proof_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_proof(parser.add_subparsers())
    return parser.parse_args(["proof", *argv])


def test_the_proof_flags_set_the_treatment_lines_ppo_settings() -> None:
    defaults = learner_env(_proof_args([]), policy_size_env)
    assert defaults == {"ESPER_POLICY_HIDDEN": "64", "ESPER_POLICY_HEAD_HIDDEN": "32"}  # Simic's PPO defaults
    given = learner_env(
        _proof_args(["--learning-rate", "3e-4", "--entropy-coef", "0.05", "--ppo-epochs", "8", "--hidden", "128"]),
        policy_size_env,
    )
    assert "ESPER_PPO_MINIBATCHES" not in given
    assert given["ESPER_LEARNING_RATE"] == "0.0003" and given["ESPER_ENTROPY_COEF"] == "0.05"
    assert given["ESPER_PPO_EPOCHS"] == "8" and given["ESPER_POLICY_HIDDEN"] == "128"
