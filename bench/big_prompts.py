"""Latency of small requests and `/health` while 25 MiB prompts arrive under a token limit.

    .venv/bin/python -m bench.big_prompts [--small 600] [--big-senders 2] [--mib 25]

One gateway process with `llm-token-limit` in force. Three phases in one run, each measuring the same small
chat requests (c=4) and `/health` polls: quiet; while `--big-senders` clients send `--mib` MiB prompts one
after another under a limit of 1M tokens a minute, which such a prompt (~5M tokens) exceeds only once
tokenized (each is tokenized, then refused: the backend never sees it, so only the gateway is measured); and
under a limit of 100,000 tokens a minute, which the prompt's size alone exceeds (refused without tokenizing).
Prints p50/p99 of both, the big prompts' answers and times, and the gateway's CPU. Each phase counts against
its own counter key.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType

import aiohttp
import orjson

from bench.harness import API_VERSION, Stack, apply_policy, cpu_seconds, local_stack

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
POLICY = """<policies><inbound><base />
  <llm-token-limit counter-key="phase-{tpm}" tokens-per-minute="{tpm}" estimate-prompt-tokens="true" />
</inbound></policies>"""
SMALL = orjson.dumps({"messages": [{"role": "user", "content": "Summarise the plot in sixteen words"}], "max_tokens": 16})
WORDS = "the tide rolls over grey stones while gulls argue about bread near the harbour wall ".split()


def big_body(mib: int) -> bytes:
    """A chat request of `mib` MiB of ordinary words (about 1 token per 5 bytes)."""
    target = mib * 1024 * 1024 - 200
    sentence = " ".join(WORDS) + " "
    text = (sentence * (target // len(sentence) + 1))[:target]
    return orjson.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 16})


@dataclass
class Phase:
    small_ms: list[float] = field(default_factory=list)
    small_statuses: Counter[int] = field(default_factory=Counter)
    health_ms: list[float] = field(default_factory=list)
    big: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def send_big_prompts(url: str, key: str, body: bytes, senders: int, stop: EventType, results: Queue[tuple[int, float]]) -> None:
    """In a process of its own, so writing 25 MiB bodies does not slow the client that measures."""

    async def sender(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            async with session.post(url, data=body, headers={"api-key": key, "content-type": "application/json"}) as response:
                await response.read()
            results.put((response.status, time.perf_counter() - start))

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            await asyncio.gather(*(sender(session) for _ in range(senders)))

    asyncio.run(run())


async def run_phase(stack: Stack, small: int, big_senders: int, body: bytes | None) -> Phase:
    phase = Phase()
    headers = {"api-key": stack.subscription_key, "content-type": "application/json"}
    done = asyncio.Event()
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    senders = None
    if body is not None:
        senders = context.Process(target=send_big_prompts, args=(stack.gateway_url + CHAT, stack.subscription_key, body, big_senders, stop, results))
        senders.start()
        await asyncio.sleep(1.5)  # let the first big prompts arrive before measuring
    async with aiohttp.ClientSession() as session:

        async def small_worker(count: int) -> None:
            for _ in range(count):
                start = time.perf_counter()
                async with session.post(stack.gateway_url + CHAT, data=SMALL, headers=headers) as response:
                    await response.read()
                phase.small_ms.append((time.perf_counter() - start) * 1000)
                phase.small_statuses[response.status] += 1

        async def health_worker() -> None:
            while not done.is_set():
                start = time.perf_counter()
                async with session.get(stack.gateway_url + "/health") as response:
                    await response.read()
                phase.health_ms.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.02)

        health = asyncio.create_task(health_worker())
        cpu_before, start = cpu_seconds(stack.gateway_pid), time.perf_counter()
        await asyncio.gather(*(small_worker(small // 4) for _ in range(4)))
        phase.seconds = time.perf_counter() - start
        phase.cpu_seconds = cpu_seconds(stack.gateway_pid) - cpu_before
        done.set()
        await health
    if senders is not None:
        stop.set()
        senders.join(timeout=120)
        while not results.empty():
            phase.big.append(results.get())
    return phase


def row(label: str, phase: Phase) -> str:
    statuses = Counter(status for status, _ in phase.big)
    big = ", ".join(f"{count}x {status}" for status, count in sorted(statuses.items())) or "-"
    refused = sum(count for status, count in phase.small_statuses.items() if status != 200)
    small = f" ({refused} not 200)" if refused else ""
    big_time = f" in {pct([s for _, s in phase.big], 0.5):.2f} s p50" if phase.big else ""
    return (
        f"{label:<34} small p50 {pct(phase.small_ms, 0.5):7.2f} ms  p99 {pct(phase.small_ms, 0.99):7.2f} ms{small}   "
        f"/health p50 {pct(phase.health_ms, 0.5):6.2f} ms  p99 {pct(phase.health_ms, 0.99):7.2f} ms  max {max(phase.health_ms):7.2f} ms   "
        f"big prompts: {big}{big_time}   gateway CPU {phase.cpu_seconds:.1f} s over {phase.seconds:.1f} s"
    )


async def main(small: int, big_senders: int, mib: int) -> None:
    body = big_body(mib)
    with local_stack({"GATEWAY_POLICY_POLL_SECONDS": "0.5"}) as stack:
        apply_policy(stack.env, POLICY.format(tpm=1_000_000))
        time.sleep(1.5)  # the gateway polls its policies every 0.5 s
        print(f"small chat requests (c=4, {small} per phase) and /health polls; {big_senders} senders of {len(body) / 2**20:.1f} MiB prompts")
        print(row("quiet", await run_phase(stack, small, big_senders, None)))
        print(row(f"{mib} MiB prompts, tokenized (429)", await run_phase(stack, small, big_senders, body)))
        apply_policy(stack.env, POLICY.format(tpm=100_000))
        time.sleep(1.5)
        print(row(f"{mib} MiB prompts, refused by size", await run_phase(stack, small, big_senders, body)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=600)
    parser.add_argument("--big-senders", type=int, default=2)
    parser.add_argument("--mib", type=int, default=25)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.small, arguments.big_senders, arguments.mib))
