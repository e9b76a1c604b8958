"""Submit jobs for one user (into their personal workspace) from many threads of this process; print
what happened as JSON.

Run by tests in several processes at once:  python -m tests.inference.burst USER_ID COUNT
"""

from __future__ import annotations

import json
import sys
import threading


def main(user_id: int, count: int) -> None:
    import django

    django.setup()
    from django.db import close_old_connections

    from accounts.models import User
    from accounts.workspaces import membership_personal
    from core.errors import ApplicationError
    from inference.services import job_submit

    # The user's personal workspace, as its owner: every thread submits into the one pool.
    member = membership_personal(User.objects.get(pk=user_id))
    outcomes: list[str] = []
    start = threading.Barrier(count)

    def submit() -> None:
        start.wait()
        try:
            job_submit(member=member, prompt="The lighthouse keeper", max_new_tokens=20)
            outcomes.append("accepted")
        except ApplicationError as error:
            outcomes.append(error.code)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=submit) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
