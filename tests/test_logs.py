import logging

import pytest

from switchyard.logs import RedactingFilter, redact, register_secret


def test_registered_secrets_and_credential_shapes_are_masked() -> None:
    register_secret("provider-key-123456")
    text = redact(
        "calling with provider-key-123456 and Authorization: Bearer abcdefghijkl and sk-proj-abcdefgh1234"
    )
    assert "provider-key-123456" not in text
    assert "abcdefghijkl" not in text
    assert "sk-proj-abcdefgh1234" not in text
    assert redact("x-api-key=sy-live-0123456789").count("0123456789") == 0
    assert redact("nothing secret here") == "nothing secret here"


def test_generated_keys_are_masked_and_words_and_paths_are_not() -> None:
    """Only real key shapes: a checkout folder `sy-…` was logged as `sy***`."""
    import secrets

    from switchyard.tenancy import dashboard_token, new_admin_token, new_secret

    for key in (
        new_secret(),
        dashboard_token("sy-admin-x"),
        new_admin_token(),
        "sk-" + secrets.token_urlsafe(36),  # OpenAI's legacy shape
        "sk-proj-" + secrets.token_urlsafe(100),
        "sk-ant-api03-" + secrets.token_urlsafe(70),
    ):
        assert redact(f"using {key} now") == "using *** now", key
    for ordinary in (
        "/home/ada/src/sy-gateway-checkout/switchyard.toml",
        "cd sy-truth-worktree-16 && make run",
        "sk-learn-style-package-name",
        "the monkey=bananas and the turkey: roasted",  # words ending in `key` are not `key=`
    ):
        assert redact(ordinary) == ordinary


def test_filter_redacts_messages_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("hunter2-but-longer")
    logger = logging.getLogger("test.redaction")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("key is %s", "hunter2-but-longer")
        try:
            raise ValueError("upstream refused key hunter2-but-longer")
        except ValueError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    assert "hunter2" not in records[0].getMessage()
    assert "hunter2" not in (records[1].exc_text or "")
    assert "ValueError" in (records[1].exc_text or "")


def test_uvicorn_loggers_pass_the_redaction_filter(capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    from switchyard.logs import UVICORN_LOGGING, setup_logging

    setup_logging("test")
    uvicorn.Config(lambda scope, receive, send: None, **UVICORN_LOGGING)  # configures its logging
    register_secret("uvicorn-leak-123456")
    # uvicorn warns (bad requests, failed handshakes) on these two; its access log is off.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).warning(
            "invalid request with key uvicorn-leak-123456 and sk-abcdef1234567890XYZ"
        )
    err = capsys.readouterr().err
    assert err.count("WARNING test uvicorn") == 2 and err.count("***") == 4
    assert "uvicorn-leak-123456" not in err and "sk-abcdef1234567890XYZ" not in err
