from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from chain.selectors import chain_status


class Command(BaseCommand):
    help = "Height, head, lag, last delivery and verification of the hub and every replica."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON array")

    def handle(self, *args, **options) -> None:
        statuses = chain_status()
        if options["json"]:
            self.stdout.write(json.dumps([status.as_dict() for status in statuses], indent=2))
            return
        for status in statuses:
            self.stdout.write(
                f"{status.slug:<12} height {status.height:>7}  behind {status.behind:>5}  "
                f"verified: {status.last_verification}"
            )
