"""Before a command's Kafka clients start: is this client let in at all?

aiokafka folds a refused password and an untrusted broker certificate into the same
"Unable to bootstrap" as a broker that is down, so a worker would retry them until its
outage deadline. One connection made here as the clients will make theirs (TLS, SASL)
tells them apart and ends the command at once, with the reason, exit code 4. A broker
that does not answer is not judged here: the outage deadline handles that.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError

from pipeline.checkpoint import is_access_denied
from pipeline.exceptions import KafkaAccessDenied, KafkaNotTrusted

log = logging.getLogger("streaminfer.kafka")

_CONNECTION_SETTINGS = ("ssl_context", "security_protocol", "sasl_mechanism", "sasl_plain_username",
                        "sasl_plain_password")


async def check_access(client_kwargs: Mapping[str, object], timeout_s: float = 10.0) -> None:
    """Raise ``KafkaNotTrusted`` or ``KafkaAccessDenied`` if the first bootstrap broker that
    answers refuses this client's TLS or SASL; return once one lets it in, or none answers."""
    settings = {name: client_kwargs[name] for name in _CONNECTION_SETTINGS if name in client_kwargs}
    for host, port, _ in collect_hosts(str(client_kwargs["bootstrap_servers"]), randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, client_id="streaminfer-access-check",
                            request_timeout_ms=int(timeout_s * 1000), **settings),  # type: ignore[arg-type]
                timeout_s,
            )
        except ssl.SSLError as exc:  # an untrusted certificate, or TLS spoken to a plaintext listener
            raise KafkaNotTrusted(f"{host}:{port}", exc) from None
        except KafkaError as exc:
            if is_access_denied(exc):
                raise KafkaAccessDenied(exc) from None
            log.debug("access check: %s:%s: %r", host, port, exc)
            continue
        except (TimeoutError, OSError) as exc:
            log.debug("access check: %s:%s does not answer (%r)", host, port, exc)
            continue
        conn.close()
        return
