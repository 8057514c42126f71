"""The corpus of public APIM policy documents: it loads at least as well as it did, and never crashes the loader.

The floors are today's measurement (`python -m bench.corpus`); raise them as statements and expression
features land, never lower them. Unit suite only: no Azurite, no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bench.corpus import MANIFEST, Document, LoadResult, all_causes, block_constructs, measure_load, read_manifest, run_once
from policies.statement import Loader

#: Documents that load today, of all and of the GenAI ones.
LOADS_ALL = 92
LOADS_GENAI = 69

CORPUS = MANIFEST.parent


@pytest.fixture(scope="module")
def results() -> list[LoadResult]:
    corpus = read_manifest()
    return [measure_load(document, corpus.loader) for document in corpus.documents]


def test_corpus_loads_at_least_todays_rate(results: list[LoadResult]) -> None:
    loads = [r for r in results if r.status == "loads"]
    assert len(loads) >= LOADS_ALL
    assert sum(r.document.genai for r in loads) >= LOADS_GENAI


def test_no_document_crashes_the_loader(results: list[LoadResult]) -> None:
    crashed = [f"{r.document.file.relative_to(CORPUS)}: {r.error}" for r in results if r.status == "crashed"]
    assert crashed == []
    assert all(r.causes for r in results if r.status == "refused")


def test_every_stored_document_is_in_the_manifest_with_its_source_and_licence() -> None:
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    listed = {entry["file"] for entry in data["document"]}
    stored = {str(path.relative_to(CORPUS)) for path in CORPUS.rglob("*.xml")}
    assert listed == stored
    sources = {source["repository"].removeprefix("https://github.com/"): source for source in data["source"]}
    excluded = {entry["repository"] for entry in data["excluded"]}
    for entry in data["document"]:
        source = sources[entry["source"]]
        if entry["source"] == "own-words":
            assert entry["inspired_by"] and entry["file"].startswith("own-words/")
            continue
        assert source["repository"] not in excluded
        assert (CORPUS / source["licence_file"]).is_file()
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"])
        assert entry["url"].startswith(f"{source['repository']}/blob/{entry['commit']}/")


def test_placeholders_are_filled_in_as_a_deploying_user_would(results: list[LoadResult]) -> None:
    for result in results:
        text = result.document.text()
        assert not re.search(r'"\{(backend-id[-0-9]*|retry-count|tpm|tokens-per-minute|tenant-id)\}"', text), result.document.file
    refusals = " ".join(cause for r in results for cause in r.causes)
    assert "not configured (manifest)" not in refusals


def test_blockers_are_all_found_and_nested_statements_still_load(tmp_path: Path) -> None:
    xml = """<policies><inbound>
        <get-authorization-context provider-id="p" authorization-id="a" context-variable-name="c" />
        <choose><when condition="@(true)">
            <set-variable name="x" value="@{ return 1; }" />
            <set-header name="a" exists-action="override"><value>@(new JObject())</value></set-header>
        </when></choose>
        <publish-to-dapr topic="t">m</publish-to-dapr>
    </inbound></policies>"""
    causes = all_causes(xml, Loader(), "inbound")
    assert causes == (
        "unknown element <get-authorization-context>",
        "unknown element <publish-to-dapr>",
    )  # the @{ } block and `new JObject()` load now


def test_a_fragment_is_measured_as_the_section_it_is_written_for() -> None:
    xml = "<fragment><forward-request /><include-fragment fragment-id='f' /></fragment>"
    assert all_causes(xml, Loader(), "backend") == (
        "<fragment> documents (not <policies>)",
        "<include-fragment>: Unknown fragment 'f'; known fragments: none defined.",
    )
    assert all_causes(xml, Loader(), "inbound")[1] == "<forward-request> in <inbound>"


def test_block_constructs_name_what_a_block_uses_and_ignore_single_expressions() -> None:
    xml = '<set-variable name="n" value="@{ var n = 0; foreach (var m in new JArray()) { n++; } return n; }" />'
    assert block_constructs(xml) == {
        "locals (`var` and typed declarations)",
        "loops (`foreach`, `for`)",
        "JSON creation (`new JObject`, `JArray`, `JProperty`)",
    }
    assert block_constructs('<set-variable name="n" value="@(new JArray())" />') == set()


async def test_run_reports_an_expression_that_fails_at_run_time(tmp_path: Path) -> None:
    failing = tmp_path / "failing.xml"
    failing.write_text('<policies><inbound><set-variable name="n" value="@(1 / context.Variables.GetValueOrDefault&lt;int&gt;(&quot;zero&quot;, 0))" /></inbound></policies>')
    passing = tmp_path / "passing.xml"
    passing.write_text("<policies><inbound><base /></inbound></policies>")
    loader = Loader(backend_ids=frozenset())
    assert (await run_once(Document(passing, genai=False), loader)).status == "ok"
    result = await run_once(Document(failing, genai=False), loader)
    assert result.status == "failed" and "divide by zero" in result.detail
