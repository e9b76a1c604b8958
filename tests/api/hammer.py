"""Send N job requests with one key as fast as possible; print the status codes as JSON.

python -m tests.api.hammer BASE_URL KEY N
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def main(base_url: str, key: str, count: int) -> None:
    statuses = []
    body = json.dumps({"prompt": "Hi", "max_new_tokens": 1}).encode()
    for _ in range(count):
        request = urllib.request.Request(
            base_url + "/api/v1/jobs",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    print(json.dumps(statuses))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
