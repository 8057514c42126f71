"""infra/: the Bicep deployment stays consistent with the settings the code reads (no `bicep` needed offline).

The settings are found by reading the code, not from a list kept by hand: every `env.get("…")`,
`os.environ[…]`, `"…" in env`, helper call taking `env` and a setting name, and click `envvar=` in
gateway/, policies/ and function_app.py. Each must be set by infra/modules/app-settings.bicep or listed
there as optional, platform, local or host; and each name the Bicep mentions must be one the code reads.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SETTINGS_BICEP = INFRA / "modules" / "app-settings.bicep"
_SETTING_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{2,}$")
_READ_METHODS = frozenset({"get", "setdefault", "pop", "getenv"})


def code_files() -> list[Path]:
    return sorted([*ROOT.glob("gateway/**/*.py"), *ROOT.glob("policies/**/*.py"), ROOT / "function_app.py"])


def module_constants(files: list[Path]) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments, so `envvar=console.KEY_SETTING` resolves to its text."""
    constants: dict[str, str] = {}
    for path in files:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                constants.update((target.id, node.value.value) for target in node.targets if isinstance(target, ast.Name))
    return constants


def settings_read(files: list[Path], constants: dict[str, str]) -> dict[str, set[str]]:
    """Setting name -> the files that read it."""

    def is_environment(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in ("env", "environ")) or (isinstance(node, ast.Attribute) and node.attr == "environ")

    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        return constants.get(name) if name else None

    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str | None] = []
            if isinstance(node, ast.Call):
                func = node.func
                reads = isinstance(func, ast.Attribute) and func.attr in _READ_METHODS
                if reads and node.args and (is_environment(func.value) or (isinstance(func.value, ast.Name) and func.value.id == "os")):  # type: ignore[union-attr]
                    names.append(text(node.args[0]))
                if any(is_environment(arg) for arg in node.args):  # helpers such as _number(env, "NAME", 5.0)
                    names += [value for arg in node.args if (value := text(arg)) and _SETTING_NAME.match(value)]
                names += [text(keyword.value) for keyword in node.keywords if keyword.arg == "envvar"]
            elif isinstance(node, ast.Subscript) and is_environment(node.value):
                names.append(text(node.slice))
            elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
                if any(is_environment(c) for c in node.comparators):
                    names.append(text(node.left))
            for name in names:
                if name:
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def bicep_settings() -> tuple[set[str], dict[str, set[str]]]:
    """The names the app settings block sets, and the names listed in the comments by category."""
    source = SETTINGS_BICEP.read_text()
    block = source.split("// app settings: begin", 1)[1].split("// app settings: end", 1)[0]
    block = "\n".join(line for line in block.splitlines() if not line.strip().startswith("//"))
    set_here = set(re.findall(r"(?:^|[{,])\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", block, re.MULTILINE)) - {"properties"}
    listed: dict[str, set[str]] = {}
    for category, name in re.findall(r"^// (optional|platform|local|host): ([A-Za-z_][A-Za-z0-9_]*) —", source, re.MULTILINE):
        listed.setdefault(category, set()).add(name)
    return set_here, listed


def test_the_scan_finds_each_kind_of_read() -> None:
    files = code_files()
    found = settings_read(files, module_constants(files))
    for name in ("GATEWAY_BACKENDS", "AZURE_OPENAI_ENDPOINT", "GATEWAY_ADMIN_KEY", "GATEWAY_PUBLIC_URL", "GATEWAY_SSE_KEEPALIVE_SECONDS"):
        assert name in found, name  # env.get and helpers taking env
    assert "FUNCTIONS_WORKER_RUNTIME" in found  # "…" in env
    assert "TIKTOKEN_CACHE_DIR" in found  # os.environ.setdefault
    assert "GATEWAY_TRY_KEY" in found  # click envvar=, through a module constant


def test_every_setting_the_code_reads_is_set_or_documented_in_the_bicep() -> None:
    files = code_files()
    found = settings_read(files, module_constants(files))
    set_here, listed = bicep_settings()
    documented = set_here | set().union(*listed.values())
    missing = {name: sorted(where) for name, where in found.items() if name not in documented}
    assert not missing, f"Settings read by the code but neither set nor listed in {SETTINGS_BICEP.relative_to(ROOT)}: {missing}"
    stale = documented - set(found) - listed.get("host", set())
    assert not stale, f"{SETTINGS_BICEP.relative_to(ROOT)} mentions settings no code reads: {sorted(stale)}"
    assert {"AzureWebJobsStorage", "GATEWAY_KEY_PEPPER", "GATEWAY_BACKENDS", "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= set_here
    assert {"GATEWAY_ADMIN_KEY", "GATEWAY_PUBLIC_URL", "GATEWAY_PRODUCTS", "PYTHON_ENABLE_INIT_INDEXING"} <= set_here


def test_local_only_settings_are_not_read_by_what_the_function_app_deploys() -> None:
    """`local:` must not hide a setting the deployed app needs: scan the code the package ships (the app loads
    most of it lazily, on first use), i.e. gateway/ and policies/ minus what .funcignore leaves out."""
    ignored = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines() if line.startswith("gateway/")]
    deployed = [f for f in code_files() if not any(str(f.relative_to(ROOT)).startswith(prefix) for prefix in ignored)]
    assert ignored and ROOT / "gateway" / "config" / "settings.py" in deployed
    assert not any(f.is_relative_to(ROOT / "gateway" / "cli") for f in deployed)
    read = settings_read(deployed, module_constants(code_files()))
    _, listed = bicep_settings()
    assert not listed["local"] & set(read), sorted(listed["local"] & set(read))


def test_parameters_example_matches_the_template() -> None:
    main = (INFRA / "main.bicep").read_text()
    declared = {name: rest for name, _, rest in re.findall(r"^param (\w+) (\w+)(.*)$", main, re.MULTILINE)}
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= set(declared), set(parameters) - set(declared)
    required = {name for name, rest in declared.items() if "=" not in rest}
    assert required - set(parameters) == {"keyPepper"}  # a secret: passed on the command line, as the README shows
    readme = (ROOT / "README.md").read_text()
    assert "keyPepper=" in readme and "az deployment group create" in readme and "func azure functionapp publish" in readme


def test_template_is_a_flex_consumption_python_app_with_its_identity_and_roles() -> None:
    main = (INFRA / "main.bicep").read_text()
    assert "tier: 'FlexConsumption'" in main and "name: 'FC1'" in main
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: '3\.11'", main)
    assert "Microsoft.ManagedIdentity/userAssignedIdentities" in main and "type: 'UserAssigned'" in main
    assert "Microsoft.Insights/components" in main and "Microsoft.Storage/storageAccounts" in main
    role = (INFRA / "modules" / "openai-user.bicep").read_text()
    assert "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd" in role  # Cognitive Services OpenAI User
    for module in re.findall(r"^module \w+ '([^']+)'", main, re.MULTILINE):
        assert (INFRA / module).exists(), module


#: The platform's front end ends an HTTP response after this many seconds (reference: platform lifecycle).
PLATFORM_RESPONSE_SECONDS = 230


def test_flex_consumption_concurrency_and_memory_are_set_from_the_sizing_note() -> None:
    main = (INFRA / "main.bicep").read_text()
    # Unset, Flex Consumption serves one request per Python instance: every open stream would hold an instance.
    assert re.search(r"triggers: \{\s*http: \{\s*perInstanceConcurrency: httpPerInstanceConcurrency\s*\}", main)
    concurrency = re.search(r"@minValue\((\d+)\)\s*@maxValue\((\d+)\)\s*@description\('.*'\)\s*param httpPerInstanceConcurrency int = (\d+)", main)
    assert concurrency and int(concurrency[1]) == 1 and int(concurrency[2]) == 1000 and 1 < int(concurrency[3]) <= 1000
    assert re.search(r"param instanceMemoryMB int = 2048", main)
    assert "bench/tokens.py" in main  # the sizing note says where its numbers come from
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["httpPerInstanceConcurrency"]["value"] == int(concurrency[3])


def test_timeouts_fit_the_platforms_limit_on_a_response() -> None:
    from gateway.config.settings import Settings

    settings = Settings.from_env({"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 16})
    # A silent backend gets the gateway's own error before the front end's 502 …
    assert settings.upstream_read_timeout < PLATFORM_RESPONSE_SECONDS
    assert all(b.timeouts.first_byte is None or b.timeouts.first_byte < PLATFORM_RESPONSE_SECONDS for b in settings.backends)
    # … a stop waits no longer than a response can last …
    assert settings.shutdown_drain_seconds <= PLATFORM_RESPONSE_SECONDS
    # … and no HTTP invocation reaches the function timeout, which restarts the worker with every request on it.
    hours, minutes, seconds = (int(part) for part in json.loads((ROOT / "host.json").read_text())["functionTimeout"].split(":"))
    function_timeout = hours * 3600 + minutes * 60 + seconds
    assert PLATFORM_RESPONSE_SECONDS + 10 < function_timeout <= 600
