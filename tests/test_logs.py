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
        logging.getLogger(name).warning("invalid request with key uvicorn-leak-123456 and sk-abcdef123456789")
    err = capsys.readouterr().err
    assert err.count("WARNING test uvicorn") == 2 and err.count("***") == 4
    assert "uvicorn-leak-123456" not in err and "sk-abcdef123456789" not in err
