"""TensorFlow's environment is prepared before it is imported, without overriding the user."""

from __future__ import annotations

from henet_edge.henet_keras.tf_env import ONEDNN, onednn_setting, prepare_tensorflow


def test_prepare_turns_onednn_on_when_unset(monkeypatch):
    monkeypatch.delenv(ONEDNN, raising=False)
    assert onednn_setting() == "unset"
    prepare_tensorflow()
    assert onednn_setting() == "1"


def test_prepare_keeps_the_users_choice(monkeypatch):
    monkeypatch.setenv(ONEDNN, "0")
    prepare_tensorflow()
    assert onednn_setting() == "0"
