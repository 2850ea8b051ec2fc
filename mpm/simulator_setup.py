"""Points the demo company's AfricasTalking plugin at the local gateway simulator."""


def enable_simulator_gateway(simulator_url: str) -> None:
    # Filled in by the gateways work: enable AfricasTalking against the simulator for the demo.
    return None
