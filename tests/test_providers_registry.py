"""One registration path: every provider, built-in or new, is a class under
`@register_provider("name")`; a copied provider file is registered as it stands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_servers import FakeOpenAI

import providers
from harness.ground.errors import FeynTuneError
from providers import registry
from providers.base import Provider
from providers.registry import register_provider
from providers.runner import Request, RunLimits, run_requests

PACKAGE = Path(providers.__file__).resolve().parent
BUILTIN = {
    "openai": ("openai_provider.py", "OpenAIProvider"),
    "anthropic": ("anthropic_provider.py", "AnthropicProvider"),
    "gemini": ("gemini.py", "GeminiProvider"),
    "deepseek": ("deepseek.py", "DeepSeekProvider"),
    "openai-compatible": ("openai_compatible.py", "OpenAICompatibleProvider"),
}


@pytest.fixture
def extra(tmp_path, monkeypatch):
    """A second folder of the `providers` package, and a registry that forgets what the test
    registered."""
    folder = tmp_path / "extra_providers"
    folder.mkdir()
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(folder)])
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    monkeypatch.setenv("FEYNTUNE_HOME", str(tmp_path / "home"))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith(("providers.", "acme")):
            sys.modules.pop(name)


def _copy_of_openai(new_name: str | None) -> str:
    source = (PACKAGE / "openai_provider.py").read_text()
    assert source.count('@register_provider("openai")') == 1
    if new_name is None:
        return source
    return source.replace('@register_provider("openai")', f'@register_provider("{new_name}")')


def test_every_builtin_registers_through_its_own_decorator():
    files, unreadable = registry._provider_files()
    assert unreadable == []
    assert {k: [Path(p).name for p in v] for k, v in files.items()} == {
        k: [f] for k, (f, _) in BUILTIN.items()}
    for key, (file, cls_name) in BUILTIN.items():
        cls = registry.get_provider_class(key.replace("-", "_").upper())
        assert cls.__name__ == cls_name and cls.name == key
        # The name lives in the decorator only, not also in the class body.
        assert not re.search(r"^\s+name\s*[:=]", (PACKAGE / file).read_text(), re.MULTILINE)
    # A subclass gets its own name, not its parent's (deepseek and openai-compatible extend openai).
    assert registry.get_provider_class("deepseek").__mro__[1].name == "openai"
    assert not hasattr(registry, "_BUILTIN")


def test_listing_the_providers_imports_no_sdk():
    code = (
        "import json, sys; from providers.registry import provider_names; "
        "print(json.dumps([provider_names(), "
        "sorted(m for m in ('openai', 'anthropic', 'google.genai') if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    names, sdks = json.loads(out.stdout)
    assert names == sorted(BUILTIN) and sdks == []


def test_a_copied_provider_file_is_registered_as_it_stands(extra):
    (extra / "acme_llm.py").write_text(_copy_of_openai("acme"))
    assert "acme" in registry.provider_names()
    with FakeOpenAI() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-test-acme")  # the copy still reads OpenAI's variable
        provider = registry.create_provider("acme", "acme-1", base_url=server.base_url)
        assert type(provider).__module__ == "providers.acme_llm"
        assert provider.name == "acme" and provider.identity()["provider"] == "acme"
        report = run_requests(provider, [Request("Gauge theories on the lattice.")],
                              limits=RunLimits(num_concurrent=1), progress=False)
    assert report.sent == 1 and report.outcomes[0].completion.text.startswith("continuation of")
    assert server.requests[0]["body"]["model"] == "acme-1"


def test_a_copy_outside_the_package_registers_on_import(tmp_path, extra, monkeypatch):
    package = tmp_path / "acmepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "acme.py").write_text(_copy_of_openai("acme-outside"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FeynTuneError, match="unknown provider 'acme-outside'"):
        registry.get_provider_class("acme-outside")
    __import__("acmepkg.acme")
    cls = registry.get_provider_class("acme_outside")
    assert cls.__module__ == "acmepkg.acme" and cls.name == "acme-outside"
    assert "acme-outside" in registry.provider_names()


def test_one_name_twice_is_an_error(tmp_path, extra, monkeypatch):
    registry.get_provider_class("openai")
    (extra / "openai_again.py").write_text(_copy_of_openai(None))
    # Which file would win depends on what was imported first: refused, even once registered.
    with pytest.raises(FeynTuneError, match="'openai' is registered by several files: .*"
                                            "openai_provider.py.*openai_again.py"):
        registry.get_provider_class("openai")
    package = tmp_path / "acmedup"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dup.py").write_text(_copy_of_openai(None))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FeynTuneError, match="'openai' is registered twice: by "
                                            r"providers\.openai_provider\.OpenAIProvider and "
                                            r"acmedup\.dup\.OpenAIProvider"):
        __import__("acmedup.dup")


def test_the_decorator_checks_what_it_registers(extra):
    with pytest.raises(TypeError, match="not a providers.base.Provider subclass"):
        register_provider("plain")(object)
    with pytest.raises(TypeError, match="sets name = 'other' but registers as 'mine'"):
        @register_provider("mine")
        class Mine(Provider):
            name = "other"
    with pytest.raises(TypeError, match="non-empty name"):
        register_provider("  ")

    @register_provider("Same_Name")
    class Agreeing(Provider):
        name = "same-name"

    assert registry.get_provider_class("same-name") is Agreeing


def test_broken_or_unregistered_files_give_one_line_errors(extra):
    (extra / "needs_sdk.py").write_text(
        "import acme_sdk_that_is_not_installed\n"
        "from providers.base import Provider\n"
        "from providers.registry import register_provider\n\n\n"
        "@register_provider('needs-sdk')\nclass NeedsSdk(Provider):\n    pass\n")
    (extra / "dynamic.py").write_text(
        "from providers.base import Provider\n"
        "from providers.registry import register_provider\n"
        "NAME = 'dynamic-other'\n\n\n"
        "@register_provider(name='dynamic')\nclass Dynamic(Provider):\n    pass\n\n\n"
        "def helper():\n    pass\n")
    (extra / "broken.py").write_text("@register_provider('broken'\nclass Broken(:\n")
    (extra / "ghost.py").write_text(
        "from providers.base import Provider\n"
        "from providers.registry import register_provider\n\n\n"
        "def later():\n    @register_provider('ghost')\n    class Ghost(Provider):\n"
        "        pass\n")
    with pytest.raises(FeynTuneError, match=r"provider 'needs-sdk' needs a missing package "
                                            r"\(No module named 'acme_sdk_that_is_not_installed'"):
        registry.get_provider_class("needs-sdk")
    assert registry.get_provider_class("dynamic").__name__ == "Dynamic"  # keyword form is read
    with pytest.raises(FeynTuneError, match=r"unknown provider 'broken'.*unreadable provider "
                                            r"files: .*broken\.py") as err:
        registry.get_provider_class("broken")
    assert "\n" not in str(err.value)
    with pytest.raises(FeynTuneError, match=r"ghost\.py was imported but registered no provider "
                                            "'ghost'"):
        registry.get_provider_class("ghost")
