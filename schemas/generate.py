"""Write the JSON Schema of every wire message into schemas/json/ (`python -m schemas.generate`)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import WIRE_MESSAGES

JSON_DIR = Path(__file__).resolve().parent / "json"


def render_all() -> dict[str, str]:
    """File name -> canonical JSON text, so a test can compare without writing."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in WIRE_MESSAGES.items()
    }


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for file_name, text in render_all().items():
        (JSON_DIR / file_name).write_text(text)
        print(f"wrote schemas/json/{file_name}")


if __name__ == "__main__":
    main()
