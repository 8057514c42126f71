"""What the gateway adds to a request: direct-to-backend vs through the gateway, in the same run.

    .venv/bin/python -m bench.overhead [--requests 2000] [--streams 300]

Prints non-streaming p50/p99 latency, throughput and the gateway's CPU per request at concurrency 1 and 20,
then streaming time to first byte (the first SSE event) and the gateway's CPU per stream. Beside them, a bare
relay with the same server and client stack and no logic (bench/bare_relay.py): the floor the extra hop sets.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

from bench.harness import API_VERSION, LoadResult, Stack, local_stack, run_load
from gateway.dev import devstack

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION


def row(label: str, result: LoadResult) -> str:
    cpu = f"{result.cpu_ms_per_request:.3f}" if result.cpu_ms_per_request is not None else "-"
    return (
        f"{label:<22} p50 {result.pct(result.latencies_ms, 0.5):7.3f} ms  p99 {result.pct(result.latencies_ms, 0.99):7.3f} ms"
        f"  first byte p50 {result.pct(result.first_byte_ms, 0.5):7.3f} ms  {result.rps:8.0f} req/s  gateway CPU {cpu} ms/req"
    )


async def main(requests: int, streams: int) -> None:
    prompt = {"messages": [{"role": "user", "content": "Summarise the plot of a short story in sixteen words please"}]}
    plain = orjson.dumps({**prompt, "max_tokens": 16})
    streamed = orjson.dumps({**prompt, "max_tokens": 16, "stream": True})
    with local_stack() as stack:
        relay_port = devstack.free_port()
        relay = devstack.start_python(["bench.bare_relay", str(relay_port), stack.simulator_url], {}, relay_port)
        try:
            await compare(stack.simulator_url, f"http://127.0.0.1:{relay_port}", relay.pid, stack, plain, streamed, requests, streams)
        finally:
            devstack.stop(relay)


async def compare(direct_url: str, relay_url: str, relay_pid: int, stack: Stack, plain: bytes, streamed: bytes, requests: int, streams: int) -> None:
    direct_headers = {"api-key": stack.simulator_key, "content-type": "application/json"}
    gateway_headers = {"api-key": stack.subscription_key, "content-type": "application/json"}
    print(f"non-streaming chat, 16-token answers, {requests} requests per cell")
    for concurrency in (1, 20):
        direct = await run_load(direct_url + CHAT, direct_headers, plain, requests, concurrency)
        bare = await run_load(relay_url + CHAT, direct_headers, plain, requests, concurrency, relay_pid)
        through = await run_load(stack.gateway_url + CHAT, gateway_headers, plain, requests, concurrency, stack.gateway_pid)
        print(row(f"direct   c={concurrency}", direct))
        print(row(f"bare     c={concurrency}", bare))
        print(row(f"gateway  c={concurrency}", through))
        added = through.pct(through.latencies_ms, 0.5) - direct.pct(direct.latencies_ms, 0.5)
        floor = bare.pct(bare.latencies_ms, 0.5) - direct.pct(direct.latencies_ms, 0.5)
        print(f"{'':<22} added p50 {added:.3f} ms (bare relay {floor:.3f} ms)")
    print(f"\nstreaming chat, 16 tokens 1 ms apart, {streams} streams, c=1")
    paced = {"x-sim-token-ms": "1"}
    direct = await run_load(direct_url + CHAT, {**direct_headers, **paced}, streamed, streams, 1)
    bare = await run_load(relay_url + CHAT, {**direct_headers, **paced}, streamed, streams, 1, relay_pid)
    through = await run_load(stack.gateway_url + CHAT, {**gateway_headers, **paced}, streamed, streams, 1, stack.gateway_pid)
    print(row("direct   stream", direct))
    print(row("bare     stream", bare))
    print(row("gateway  stream", through))
    added = through.pct(through.first_byte_ms, 0.5) - direct.pct(direct.first_byte_ms, 0.5)
    floor = bare.pct(bare.first_byte_ms, 0.5) - direct.pct(direct.first_byte_ms, 0.5)
    print(f"{'':<22} added time to first byte p50 {added:.3f} ms (bare relay {floor:.3f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.streams))
