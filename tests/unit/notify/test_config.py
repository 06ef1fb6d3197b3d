"""The controller's own sinks from --notifications-config: parsed, or refused naming the field and
never the URL or a header's value."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.notify import Kind, SlackSink, WebhookSink
from controller.notify.config import ConfigError, load_config, parse_config

SECRET = "T0KEN-do-not-show"


def test_a_config_lists_slack_and_webhook_sinks_with_their_kinds(tmp_path: Path) -> None:
    # given a config file as the chart mounts it from a Secret
    path = tmp_path / "sinks.yaml"
    path.write_text(
        f"""
sinks:
  - name: oncall
    type: slack
    url: https://hooks.slack.com/services/T000/B000/{SECRET}
    kinds: [RolledBack, Failed]
  - name: bot
    type: webhook
    url: http://127.0.0.1:9000/hook
    headers: {{Authorization: Bearer {SECRET}}}
"""
    )

    # when it is loaded
    oncall, bot = load_config(path)

    # then each sink has its type, URL, headers and kinds (none: every kind), and shows no secret
    assert isinstance(oncall.sink, SlackSink) and oncall.kinds == {Kind.ROLLED_BACK, Kind.FAILED}
    assert isinstance(bot.sink, WebhookSink) and bot.kinds == frozenset()
    assert bot.sink.headers == {"Authorization": f"Bearer {SECRET}"}
    assert SECRET not in repr((oncall, bot))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"sink": []}, "sinks: is required"),
        ({"sinks": [{"type": "slack", "url": "https://x.example/"}]}, "sinks[0].name: is required"),
        ({"sinks": [{"name": "a", "type": "sms", "url": "https://x.example/"}]}, "sinks[0].type: 'sms' is not one of"),
        ({"sinks": [{"name": "a", "type": "slack"}]}, "sinks[0].url: is required"),
        (
            {"sinks": [{"name": "a", "type": "slack", "url": "https://x/", "kinds": ["Deleted"]}]},
            "sinks[0].kinds: 'Deleted' is not a kind; use some of Promoted, RolledBack",
        ),
        (
            {
                "sinks": [
                    {"name": "a", "type": "slack", "url": "https://x/"},
                    {"name": "a", "type": "webhook", "url": "https://y/"},
                ]
            },
            "sinks[1].name: 'a' names another sink too",
        ),
        (
            {"sinks": [{"name": "a", "type": "webhook", "url": f"ftp://{SECRET}.example/"}]},
            "sinks[0]: a sink URL must be",
        ),
    ],
)
def test_a_mistake_is_refused_naming_the_file_and_field_but_no_secret(document: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(document, source="/etc/n/sinks.yaml")
    assert str(refused.value).startswith("/etc/n/sinks.yaml: ")
    assert message in str(refused.value)
    assert SECRET not in str(refused.value)


def test_a_file_that_is_not_yaml_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "sinks.yaml"
    path.write_text("sinks: [unclosed")
    with pytest.raises(ConfigError, match=r"sinks\.yaml: cannot be read as YAML"):
        load_config(path)
