"""Attribute names of the general-services classes whose payload madpipe shows raw for now.

SA (IBA 15.2.5, class 0x03) and CM (IBA 12.6, class 0x07): names only, so that a line of
`madpipe decode` says PathRecord or REQ instead of a number.
"""

SA_ATTRIBUTE_NAMES = {
    0x0001: "ClassPortInfo",
    0x0002: "Notice",
    0x0003: "InformInfo",
    0x0011: "NodeRecord",
    0x0012: "PortInfoRecord",
    0x0013: "SLtoVLMappingTableRecord",
    0x0014: "SwitchInfoRecord",
    0x0015: "LinearForwardingTableRecord",
    0x0016: "RandomForwardingTableRecord",
    0x0017: "MulticastForwardingTableRecord",
    0x0018: "SMInfoRecord",
    0x0020: "LinkRecord",
    0x0030: "GuidInfoRecord",
    0x0031: "ServiceRecord",
    0x0033: "P_KeyTableRecord",
    0x0035: "PathRecord",
    0x0036: "VLArbitrationTableRecord",
    0x0038: "MCMemberRecord",
    0x0039: "TraceRecord",
    0x003A: "MultiPathRecord",
    0x003B: "ServiceAssociationRecord",
    0x00F3: "InformInfoRecord",
}

CM_ATTRIBUTE_NAMES = {
    0x0001: "ClassPortInfo",
    0x0010: "REQ",
    0x0011: "MRA",
    0x0012: "REJ",
    0x0013: "REP",
    0x0014: "RTU",
    0x0015: "DREQ",
    0x0016: "DREP",
    0x0017: "SIDR_REQ",
    0x0018: "SIDR_REP",
    0x0019: "LAP",
    0x001A: "APR",
}

PERF_ATTRIBUTE_NAMES = {
    0x0001: "ClassPortInfo",
    0x0010: "PortSamplesControl",
    0x0011: "PortSamplesResult",
    0x0012: "PortCounters",
    0x001D: "PortCountersExtended",
}
