"""ML2 mechanism driver ``doctor_bind_any``: binds every port on any host, for the test bed.

The bed's Neutron is the API only: no agent, no dataplane. Nova's fake driver plugs nothing,
so a port only has to be bound for a boot with a network to succeed; it is bound as an OVS
port without a firewall and marked ACTIVE. Never use this outside a test bed.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAnyMechanismDriver(api.MechanismDriver):
    def initialize(self) -> None:
        pass

    @property
    def connectivity(self) -> str:
        return portbindings.CONNECTIVITY_L2  # binds ports without an IP address too

    def bind_port(self, context: api.PortContext) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return
