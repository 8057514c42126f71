"""Gateway memory while many long streams are relayed under a token-metric policy.

    .venv/bin/python -m bench.stream_memory [--streams 20] [--tokens 2000]

`--streams` concurrent chat streams of `--tokens` tokens each (5 ms apart) through one gateway process whose
`llm-emit-token-metric` policy makes it read every stream's usage. Prints the gateway's resident memory
(VmRSS) before, its peak while the streams run, and after, so the memory a stream holds shows as peak - before.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson

from bench.harness import API_VERSION, apply_policy, local_stack, rss_mib

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
POLICY = """<policies><inbound><base />
  <llm-emit-token-metric namespace="bench"><dimension name="Subscription ID" /></llm-emit-token-metric>
</inbound></policies>"""


async def main(streams: int, tokens: int) -> None:
    # The simulator echoes the question after "Simulated answer to:": a question of n words streams n + 3 tokens.
    body = orjson.dumps({"messages": [{"role": "user", "content": " ".join(["word"] * (tokens - 3))}], "stream": True})
    with local_stack({"GATEWAY_POLICY_POLL_SECONDS": "0.5"}) as stack:
        apply_policy(stack.env, POLICY)
        time.sleep(1.5)  # the gateway polls its policies every 0.5 s
        headers = {"api-key": stack.subscription_key, "content-type": "application/json", "x-sim-token-ms": "5"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

            async def stream() -> int:
                async with session.post(stack.gateway_url + CHAT, data=body, headers=headers) as response:
                    return len(await response.read())

            await stream()  # warm up: encodings, connections, policy
            before = rss_mib(stack.gateway_pid)
            running = asyncio.gather(*(stream() for _ in range(streams)))
            peak = before
            while not running.done():
                peak = max(peak, rss_mib(stack.gateway_pid))
                await asyncio.sleep(0.05)
            sizes = await running
            after = rss_mib(stack.gateway_pid)
    print(f"{streams} concurrent streams of {tokens} tokens ({sum(sizes) / streams / 1024:.0f} KiB of SSE each), token metric on")
    print(f"gateway RSS before {before:.1f} MiB, peak {peak:.1f} MiB (+{peak - before:.1f}), after {after:.1f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=2000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.streams, arguments.tokens))
