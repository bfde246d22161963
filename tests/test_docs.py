"""The README's Python examples run as written (PettingZoo's doc-examples habit)."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a Python example"
    for code in blocks:
        namespace: dict = {"__name__": "readme_example"}
        exec(compile(code, str(README), "exec"), namespace)
    assert "private information" in capsys.readouterr().out
