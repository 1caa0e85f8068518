"""docs/migration.md's snippets (timm, torchvision and big_vision equivalents) run as written; each
asserts the other library's formula it stands for."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snippets() -> list[str]:
  with open(os.path.join(ROOT, "docs", "migration.md")) as file:
    return re.findall(r"```python\n(.*?)```", file.read(), flags=re.S)


def test_the_page_has_a_snippet_for_each_library():
  assert len(snippets()) == 4


@pytest.mark.parametrize("index", range(4))
def test_each_snippet_runs_and_its_assertions_hold(index):
  exec(compile(snippets()[index], f"docs/migration.md snippet {index}", "exec"), {})
