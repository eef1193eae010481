"""A command as the CLI runs one: Prefect's temporary API (flows.ephemeral_api), a flow of N
quick task runs, then exit. ``python -m tests.flows.many_task_runs N``."""

import sys

from prefect import flow, task

from flows.ephemeral_api import start_ephemeral_api


@task
def step(n: int) -> int:
    return n


@flow
def many(n: int) -> int:
    return sum(step(i) for i in range(n))


if __name__ == "__main__":
    start_ephemeral_api()
    print(many(int(sys.argv[1])))
