"""The real-deployment runtime: the federation as separate processes on 127.0.0.1, with TLS and
SuperNode authentication — the topology of ``docker-compose.yml``, without containers.

Topology (Flower 1.41 serves each component's APIs over HTTPS on one port)::

    flwr CLI ── Control API ──► SuperLink 127.0.0.1:P ◄── Runtime API ── ServerApp executor
                                    ▲ Fleet API: TLS + a registered EC key per SuperNode
                  ┌─────────────────┼─────────────────┐
              SuperNode 1      SuperNode 2   …    SuperNode K      (127.0.0.1:Pₖ: Runtime API)
                  ▲                 ▲                 ▲
           ClientApp exec. 1  ClientApp exec. 2   ClientApp exec. K  (reads client-k/client.csv)

Every SuperLink and SuperNode runs with ``--isolation process``: it only routes messages, and
a separate SuperExec (``flower-superexec``) starts the ServerApp or ClientApp processes. Each
SuperExec proves itself to its SuperLink/SuperNode with a shared secret
(``--superexec-auth-secret-file``); a SuperNode proves itself to the SuperLink with an EC key
whose public half was registered beforehand (``flwr supernode register``,
``--enable-supernode-auth``), so an unregistered SuperNode is refused.

Modules:

* :mod:`~simulations.deployment.credentials` — a CA, the TLS certificates, the SuperNode keys
  and the SuperExec secrets, one folder per service;
* :mod:`~simulations.deployment.client_files` — one CSV per client, in the dataset's own
  format;
* :mod:`~simulations.deployment.flower_config` — the files Flower reads: run and node config
  overrides, the ``flwr`` CLI's connection, the app folder;
* :mod:`~simulations.deployment.supervisor` — processes started as process-group leaders,
  signal handling and shutdown by PID;
* :mod:`~simulations.deployment.federation` — :class:`LocalFederation`: the SuperLink, the
  SuperNodes, their executors and the ``flwr`` CLI against them;
* :mod:`~simulations.deployment.run` — :func:`deploy_federation`: the per-client files and
  credentials, the federation started, each strategy run with ``flwr run``, everything
  stopped, a summary.
"""

from __future__ import annotations

from common.errors import FairsynthError

#: Every component listens on this address only.
LOOPBACK = "127.0.0.1"


class DeploymentError(FairsynthError):
    """A component did not start, a run failed, or a ``flwr`` command was refused."""
