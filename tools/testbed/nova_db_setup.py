"""Nova's database set-up in one process: nova-manage's own commands, in the documented order.

    nova_db_setup.py NOVA_CONF NOVA_DB_CONF CELL0_DB_URL CELL1_DB_URL TRANSPORT_URL

runs ``api_db sync``, ``cell_v2 map_cell0``, ``db sync`` and ``cell_v2 create_cell --name
cell1`` exactly as ``nova-manage`` does (same classes, same configuration), but imports Nova
once instead of four times: on two cores each import costs 3-10 s of a cold start.
Idempotent: an existing cell0 or cell1 is left as it is. Run with the nova venv's python.
"""

import sys

from nova.cmd import manage  # first: it applies Nova's monkey patching, as nova-manage does


def main(argv: list[str]) -> int:
    nova_conf, nova_db_conf, cell0_url, cell1_url, transport_url = argv
    from nova import config, objects
    from oslo_log import log as logging

    config.parse_args(["nova-manage", "--config-file", nova_conf, "--config-file", nova_db_conf])
    logging.setup(manage.CONF, "nova")
    objects.register_all()
    steps = [
        ("api_db sync", lambda: manage.ApiDbCommands().sync()),
        ("cell_v2 map_cell0", lambda: manage.CellV2Commands().map_cell0(
            database_connection=cell0_url)),
        ("db sync", lambda: manage.DbCommands().sync()),
        ("cell_v2 create_cell --name cell1", lambda: manage.CellV2Commands().create_cell(
            name="cell1", database_connection=cell1_url, transport_url=transport_url)),
    ]
    for name, step in steps:
        print(f"nova-manage {name}", flush=True)
        rc = step() or 0
        if rc == 2 and name.startswith("cell_v2 create_cell"):
            print("cell1 exists already", flush=True)
        elif rc:
            print(f"nova-manage {name} failed: {rc}", flush=True)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
