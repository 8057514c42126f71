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
LOADS_ALL = 124
LOADS_GENAI = 100

CORPUS = MANIFEST.parent


@pytest.fixture(scope="module")
def results() -> list[LoadResult]:
    corpus = read_manifest()
    return [measure_load(document, corpus.loader_for(document)) for document in corpus.documents]


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
    assert all_causes(xml, Loader(), "backend") == ("include-fragment of a fragment not in the corpus",)
    assert all_causes(xml, Loader(), "inbound")[0] == "<forward-request> in <inbound>"


def test_fragments_resolve_beside_the_document_and_by_the_manifests_mapping(tmp_path: Path) -> None:
    files = {
        "lab/policy.xml": '<policies><inbound><include-fragment fragment-id="tag" /><include-fragment fragment-id="route-v2" /></inbound></policies>',
        "lab/tag.xml": '<!-- a comment first --><fragment><set-header name="x" exists-action="delete" /></fragment>',
        "other/route.xml": '<fragment><set-backend-service backend-id="b" /></fragment>',
        "other/broken.fragment.xml": "<fragment><nope /></fragment>",
        "other/uses-broken.xml": '<policies><inbound><include-fragment fragment-id="broken" /></inbound></policies>',
    }
    for name, xml in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(xml)
    entries = "".join(f'[[document]]\nfile = "{name}"\nsource = "s"\ngenai = true\n\n' for name in files)
    entries = entries.replace('file = "lab/policy.xml"', 'file = "lab/policy.xml"\nfragments = { "route-v2" = "other/route.xml" }')
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[loader]\nbackend_ids = ["b"]\nembeddings_backend_ids = []\n[loader.named_values]\n\n' + entries)
    corpus = read_manifest(manifest)
    measured = {r.document.file.relative_to(tmp_path).as_posix(): r for r in (measure_load(d, corpus.loader_for(d)) for d in corpus.documents)}
    assert {name: r.status for name, r in measured.items()} == {
        "lab/policy.xml": "loads", "lab/tag.xml": "loads", "other/route.xml": "loads",
        "other/broken.fragment.xml": "refused", "other/uses-broken.xml": "refused",
    }  # fmt: skip
    assert measured["lab/policy.xml"].statements == 2
    assert measured["other/broken.fragment.xml"].causes == ("unknown element <nope>",)
    assert measured["other/uses-broken.xml"].causes == ("include-fragment of a fragment that does not load",)


def test_every_fragment_mapping_names_a_fragment_of_the_corpus() -> None:
    corpus = read_manifest()
    fragments = {d.file for d in corpus.documents if d.is_fragment}
    mapped = [path for d in corpus.documents for path in d.fragments.values()]
    assert mapped and all(path in fragments for path in mapped)


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
    failing.write_text(
        '<policies><inbound><set-variable name="n" value="@(1 / context.Variables.GetValueOrDefault&lt;int&gt;(&quot;zero&quot;, 0))" /></inbound></policies>'
    )
    passing = tmp_path / "passing.xml"
    passing.write_text("<policies><inbound><base /></inbound></policies>")
    loader = Loader(backend_ids=frozenset())
    assert (await run_once(Document(passing, genai=False), loader)).status == "ok"
    result = await run_once(Document(failing, genai=False), loader)
    assert result.status == "failed" and "divide by zero" in result.detail
