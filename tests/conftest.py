"""Shared fixtures: a dask.distributed cluster for the tests that need one."""

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A two-process LocalCluster, started once for the whole session."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
