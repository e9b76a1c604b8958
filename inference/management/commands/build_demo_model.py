from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.engine import DEMO_SIZES, build_demo_model


class Command(BaseCommand):
    help = "Build the demo model and its tokenizer locally (no download), loadable like any hub model."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--path", default=str(settings.DEMO_MODEL_PATH), help="where to save it")
        parser.add_argument("--size", default="demo", choices=sorted(DEMO_SIZES))
        parser.add_argument("--force", action="store_true", help="rebuild even if it exists")

    def handle(self, *args, path: str, size: str, force: bool, **options) -> None:
        target = Path(path)
        if (target / "config.json").exists() and not force:
            self.stdout.write(f"Demo model already at {target}")
            return
        self.stdout.write(f"Building the {size} model in {target} (once; it trains briefly on the shipped text)...")
        started = time.monotonic()
        build_demo_model(target, size=size)
        self.stdout.write(self.style.SUCCESS(f"Built in {time.monotonic() - started:.0f} s"))
