"""Data out (DESIGN §10): the log as messages and files for the rest of a PAC's systems.

- ``message.py``: one event as the JSON message every target sends (secrets left out);
- ``networks.py``: the master account (network) of every aggregate, kept beside the positions;
- ``tracking.py``: where each publisher stands, in the views' database;
- ``publisher.py``: follows the log and hands each page to a ``Target`` (NATS, AMQP, ...),
  moving its position only after the target confirmed every message of the batch.

The targets themselves live in ``adapters/publish/`` and the Parquet export in
``adapters/export/``: this package imports no client library.
"""
