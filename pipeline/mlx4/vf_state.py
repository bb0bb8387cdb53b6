"""VF vport state files: what an operator sets with ``ip link set DEV vf N ...``, as a file madpipe
reads for the master's Ethernet (RoCE) path.

One line a VF and physical port, the VF's settings after them, in ``ip link``'s words:

    # vf port settings
    1 2 vlan 100 qos 3 spoofchk on mac-index 5 smac 5      # VST 802.1Q, QoS 3, MAC 5 only
    2 2 vlan 200 proto 802.1ad state disable                # QinQ, link forced down
    3 2 smac 0,1,2                                          # VGT: the MACs the VF registered

- ``vlan N`` (0..4095; 4095 is MLX4_VGT, no VST), ``qos N`` (0..7), ``proto 802.1Q|802.1ad``,
  ``state auto|enable|disable``, ``spoofchk on|off``: the vport state ``update_vport_qp_param``
  reads (``vf_oper[vf].vport[port].state``);
- ``vlan-index N``, ``mac-index N`` (0..127), ``qos-vport N`` (0..255): the table indices the
  master found for them (``vlan_idx``, ``mac_idx``, ``qos_vport``), which a trace cannot show;
- ``smac I,J,...`` (0..127): the source-MAC indices the VF has registered on the port, the ones
  ``roce_verify_mac`` accepts in a QP context.

Anything not set keeps ``paravirt.vport_state``'s default (``ip link``'s: no VST, QoS 0, link
auto, spoof check off, indices 0; no MAC registered).
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs.errors import MadpipeError, read_text
from madpipe.pipeline.mlx4 import eth_reference as eth
from madpipe.pipeline.mlx4.paravirt import MAX_PORTS, vport_state
from madpipe.pipeline.mlx4.profiles import resolve

#: setting -> (vport column, lowest, highest, words for values); a word list replaces numbers.
_SETTINGS = {
    "vlan": (eth.VPORT_DEFAULT_VLAN, 0, eth.MLX4_VGT, None),
    "qos": (eth.VPORT_DEFAULT_QOS, 0, 7, None),
    "proto": (eth.VPORT_VLAN_PROTO, 0, 1, ("802.1Q", "802.1ad")),
    "state": (eth.VPORT_LINK_STATE, 0, 2, ("auto", "enable", "disable")),
    "spoofchk": (eth.VPORT_SPOOFCHK, 0, 1, ("off", "on")),
    "vlan-index": (eth.VPORT_VLAN_IDX, 0, 127, None),
    "mac-index": (eth.VPORT_MAC_IDX, 0, 127, None),
    "qos-vport": (eth.VPORT_QOS_VPORT, 0, 255, None),
}


def read_vf_state(path: str, num_vfs: int, profile="mainline") -> tuple[np.ndarray, np.ndarray]:
    """``(vport uint16[F, 2, 8], smac_registered uint8[F, 2, 128])`` for ``paravirt.rewrite``: the
    defaults with the file's settings applied. A mistake is one line naming the file, line and
    setting."""
    vport = vport_state(profile)
    smac = np.zeros((resolve(profile).mfunc_max, MAX_PORTS, 128), dtype=np.uint8)
    for n, line in enumerate(read_text(path).split("\n"), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{n}"
        if len(words) < 2 or len(words) % 2:
            raise MadpipeError(f"{where}: expected 'VF PORT' and settings in pairs ('vlan 100 qos 3'), "
                               f"got {' '.join(words)!r}")
        vf = _number(where, "vf", words[0], 1, num_vfs)
        port = _number(where, "port", words[1], 1, MAX_PORTS)
        for name, value in zip(words[2::2], words[3::2]):
            if name == "smac":
                for index in value.split(","):
                    smac[vf, port - 1, _number(where, "smac", index, 0, 127)] = 1
                continue
            if name not in _SETTINGS:
                raise MadpipeError(f"{where}: unknown setting {name!r} (one of {', '.join(_SETTINGS)}, smac)")
            column, low, high, named = _SETTINGS[name]
            if named:
                if value not in named:
                    raise MadpipeError(f"{where}, {name}: expected {' or '.join(named)}, got {value!r}")
                vport[vf, port - 1, column] = named.index(value)
            else:
                vport[vf, port - 1, column] = _number(where, name, value, low, high)
    return vport, smac


def _number(where: str, name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise MadpipeError(f"{where}, {name}: not an integer: {text[:24]!r}") from None
    if not low <= value <= high:
        raise MadpipeError(f"{where}, {name}: {text[:24]} is outside {low}..{high}")
    return value


__all__ = ["read_vf_state"]
