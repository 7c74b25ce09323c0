"""Protobuf framing of what travels on the reply subject (chunk / final / error)."""

from __future__ import annotations

from switchyard.v1 import invoke_pb2


def chunk_frame(chunk: invoke_pb2.Chunk) -> bytes:
    return invoke_pb2.Reply(chunk=chunk).SerializeToString()


def final_frame(response: invoke_pb2.InvokeResponse) -> bytes:
    return invoke_pb2.Reply(final=response).SerializeToString()


def error_frame(error: invoke_pb2.Error) -> bytes:
    return invoke_pb2.Reply(error=error).SerializeToString()


def decode_reply(data: bytes) -> invoke_pb2.Reply:
    return invoke_pb2.Reply.FromString(data)
