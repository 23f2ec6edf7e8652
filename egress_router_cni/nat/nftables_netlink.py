"""The router's nftables table as nfnetlink messages (pure): one batch to install, rules read back.

This is what `nft -f` sends for nftables_text.render_install's batch, without
libnftables: no parser, no cache fill, no library on the node. The messages
match nft's own (the same expressions, registers and flags as
`nft --debug=netlink` shows for the text form), so `nft list` prints exactly
the rules nftables_text.rule_text spells, and the table comment is stored in
the table's userdata the way nft stores it. tests/netns/test_nft_netlink.py
compares the result with `nft -j list ruleset` for every rule shape.
"""

from __future__ import annotations

from _struct import pack, unpack_from

from ..ipaddr import IPAddress
from ..netlink import HEADER, NLA_F_NESTED
from .nftables_text import TABLE, chain_of
from .rules import DnatRule, SnatRule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

    from .rules import Rule

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN = 3
NFT_MSG_NEWRULE, NFT_MSG_GETRULE = 6, 7
NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6 (equal to AF_INET, AF_INET6)

NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_USERDATA = 1, 2, 6
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE = 1
NFTNL_UDATA_TABLE_COMMENT = 0
NF_ACCEPT = 1
NFT_REG_1, NFT_REG_2 = 1, 2
NFT_CMP_EQ = 0
NFT_META_IIFNAME, NFT_META_OIFNAME, NFT_META_L4PROTO = 6, 7, 16
NFT_PAYLOAD_TRANSPORT_HEADER = 2
NFT_NAT_SNAT, NFT_NAT_DNAT = 0, 1
NF_NAT_RANGE_PROTO_SPECIFIED = 0x2
IFNAMSIZ = 16
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
# (name, netfilter hook, priority): nft's "type nat hook prerouting priority dstnat" etc.
CHAINS = (("prerouting", 0, -100), ("postrouting", 4, 100))

# --- encoding ---------------------------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute: header, payload, padding to 4 bytes."""
    data = pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) & 3)


def nested(kind: int, *parts: bytes) -> bytes:
    """A nested attribute holding parts."""
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def string(kind: int, text: str) -> bytes:
    """A NUL-terminated string attribute."""
    return attr(kind, text.encode() + b"\0")


def be32(kind: int, value: int) -> bytes:
    """A big-endian 32-bit attribute."""
    return attr(kind, pack(">i" if value < 0 else ">I", value))


def message(msg_type: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """One netlink message: header, nfgenmsg (family, version 0, res_id big-endian), attributes."""
    payload = pack("=BB", family, 0) + pack(">H", res_id) + body
    return HEADER.pack(HEADER.size + len(payload), msg_type, flags, seq, 0) + payload


def nft_type(msg: int) -> int:
    """The netlink message type of an nf_tables message."""
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def _expr(name: str, *data: bytes) -> bytes:
    return nested(NFTA_LIST_ELEM, string(NFTA_EXPR_NAME, name), nested(NFTA_EXPR_DATA, *data))


def _meta(key: int) -> bytes:
    return _expr("meta", be32(1, NFT_REG_1), be32(2, key))  # NFTA_META_DREG, NFTA_META_KEY


def _cmp_eq(value: bytes) -> bytes:
    # NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA { NFTA_DATA_VALUE }
    return _expr("cmp", be32(1, NFT_REG_1), be32(2, NFT_CMP_EQ), nested(3, attr(NFTA_DATA_VALUE, value)))


def _immediate(reg: int, value: bytes) -> bytes:
    return _expr("immediate", be32(1, reg), nested(2, attr(NFTA_DATA_VALUE, value)))


def _ifname(name: str) -> bytes:
    # nft compares the whole IFNAMSIZ buffer, NUL-padded, for a name without a wildcard.
    return name.encode().ljust(IFNAMSIZ, b"\0")


def _address(family: int, address: IPAddress) -> bytes:
    if address.version != family:
        raise ValueError(f"IPv{address.version} address {address} in an IPv{family} rule")
    return address.packed


# Most expressions repeat from rule to rule (the interface match, the protocol
# match, the NAT statement, often the address): 1000 destinations encode ~12x
# faster when each distinct piece is built once per exec.
_PIECES: Dict[Tuple[object, ...], bytes] = {}


def _piece(key: Tuple[object, ...], build: Callable[[], bytes]) -> bytes:
    value = _PIECES.get(key)
    if value is None:
        value = _PIECES[key] = build()
    return value


def _match_iface(key: int, name: str) -> bytes:
    return _piece(("iface", key, name), lambda: _meta(key) + _cmp_eq(_ifname(name)))


def _match_dport(protocol: str, port: int) -> bytes:
    head = _piece(
        ("proto", protocol),
        lambda: (
            _meta(NFT_META_L4PROTO)
            + _cmp_eq(bytes([PROTOCOLS[protocol]]))
            # NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN: the destination port, 2 bytes at offset 2.
            + _expr("payload", be32(1, NFT_REG_1), be32(2, NFT_PAYLOAD_TRANSPORT_HEADER), be32(3, 2), be32(4, 2))
        ),
    )
    return head + _cmp_eq(pack(">H", port))


def _load_address(family: int, address: IPAddress) -> bytes:
    return _piece(("addr", family, address), lambda: _immediate(NFT_REG_1, _address(family, address)))


def _nat(kind: int, family: int, to_port: Optional[int]) -> bytes:
    def build() -> bytes:
        nat = [be32(1, kind), be32(2, NFPROTO[family]), be32(3, NFT_REG_1)]
        if to_port is None:
            return _expr("nat", *nat)
        nat += [be32(5, NFT_REG_2), be32(7, NF_NAT_RANGE_PROTO_SPECIFIED)]
        return _immediate(NFT_REG_2, pack(">H", to_port)) + _expr("nat", *nat)

    return _piece(("nat", kind, family, to_port), build)


def rule_expressions(rule: Rule) -> bytes:
    """The expressions of one rule, as nft compiles rule_text(rule)."""
    if isinstance(rule, SnatRule):
        return (
            _match_iface(NFT_META_OIFNAME, rule.out_iface)
            + _load_address(rule.family, rule.to_addr)
            + _nat(NFT_NAT_SNAT, rule.family, None)
        )
    parts = _match_iface(NFT_META_IIFNAME, rule.in_iface)
    if rule.protocol:
        parts += _match_dport(rule.protocol, rule.port or 0)
    return parts + _load_address(rule.family, rule.to_addr) + _nat(NFT_NAT_DNAT, rule.family, rule.to_port)


def table_userdata(note: str) -> bytes:
    """nft's table userdata for a comment: one TLV (type, length, NUL-terminated text)."""
    text = note.encode() + b"\0"
    if len(text) > 255:
        raise ValueError("table note longer than 254 bytes")
    return bytes([NFTNL_UDATA_TABLE_COMMENT, len(text)]) + text


class Batch:
    """Messages between NFNL_MSG_BATCH_BEGIN and _END: the kernel commits all of them or none."""

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq
        self.seq = first_seq
        self.parts = [message(NFNL_MSG_BATCH_BEGIN, 1, self.seq, 0, b"", NFNL_SUBSYS_NFTABLES)]

    def add(self, msg: int, flags: int, family: int, body: bytes) -> None:
        """Append one nf_tables message (a request without ACK) to the batch."""
        self.seq += 1
        self.parts.append(message(nft_type(msg), 1 | flags, self.seq, NFPROTO[family], body))  # NLM_F_REQUEST

    def close(self) -> Tuple[bytes, int]:
        """The batch's bytes and the sequence number of its last message (the one acknowledged)."""
        last = self.seq
        # Only the last message asks for an ACK: the kernel reports every error
        # of a batch anyway, and 1000 rules need not come back as 1000 ACKs.
        last_part = bytearray(self.parts[-1])
        flags = unpack_from("=H", last_part, 6)[0] | 0x4  # NLM_F_ACK
        last_part[6:8] = pack("=H", flags)
        self.parts[-1] = bytes(last_part)
        self.seq += 1
        self.parts.append(message(NFNL_MSG_BATCH_END, 1, self.seq, 0, b"", NFNL_SUBSYS_NFTABLES))
        return b"".join(self.parts), last

    def replace_table(self, family: int) -> None:
        """`add table` + `delete table`: valid whether or not the table exists."""
        name = string(NFTA_TABLE_NAME, TABLE)
        self.add(NFT_MSG_NEWTABLE, 0x400, family, name + be32(NFTA_TABLE_FLAGS, 0))  # NLM_F_CREATE
        self.add(NFT_MSG_DELTABLE, 0, family, name)

    def install(self, rules: Iterable[Rule], family: int, note: str) -> None:
        """The table of one family, recreated with exactly these rules (render_install's batch)."""
        self.replace_table(family)
        table = string(NFTA_TABLE_NAME, TABLE) + be32(NFTA_TABLE_FLAGS, 0)
        if note:
            table += attr(NFTA_TABLE_USERDATA, table_userdata(note))
        self.add(NFT_MSG_NEWTABLE, 0x400, family, table)
        for name, hook, priority in CHAINS:
            self.add(
                NFT_MSG_NEWCHAIN,
                0x400,
                family,
                string(NFTA_CHAIN_TABLE, TABLE)
                + string(NFTA_CHAIN_NAME, name)
                + string(NFTA_CHAIN_TYPE, "nat")
                + be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                + nested(NFTA_CHAIN_HOOK, be32(NFTA_HOOK_HOOKNUM, hook), be32(NFTA_HOOK_PRIORITY, priority)),
            )
        where = {chain: string(NFTA_RULE_TABLE, TABLE) + string(NFTA_RULE_CHAIN, chain) for chain, _, _ in CHAINS}
        for rule in rules:
            if rule.family == family:
                self.add(
                    NFT_MSG_NEWRULE,
                    0x400 | 0x800,  # NLM_F_CREATE | NLM_F_APPEND: in order, first match wins
                    family,
                    where[chain_of(rule)] + nested(NFTA_RULE_EXPRESSIONS, rule_expressions(rule)),
                )


def get_table(seq: int, family: int) -> bytes:
    """A request for the plugin's table in one family."""
    return message(nft_type(NFT_MSG_GETTABLE), 1 | 0x4, seq, NFPROTO[family], string(NFTA_TABLE_NAME, TABLE))


def dump_rules(seq: int, family: int) -> bytes:
    """A dump of the rules of the plugin's table in one family (the kernel filters by table)."""
    return message(nft_type(NFT_MSG_GETRULE), 1 | 0x300, seq, NFPROTO[family], string(NFTA_RULE_TABLE, TABLE))


# --- decoding ---------------------------------------------------------------------------------


if TYPE_CHECKING:
    Attrs = Dict[int, bytes]


def attrs_of(data: bytes, offset: int = 0) -> Attrs:
    """Attribute type (flags stripped) -> payload, for one level of TLVs."""
    found: Attrs = {}
    while offset + 4 <= len(data):
        length, kind = unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def _list(data: bytes) -> List[bytes]:
    items = []
    offset = 0
    while offset + 4 <= len(data):
        length, _ = unpack_from("=HH", data, offset)
        if length < 4:
            break
        items.append(data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return items


_BODY = HEADER.size + 4  # netlink header + nfgenmsg


def table_note(msg: bytes) -> Optional[str]:
    """The comment in a NEWTABLE message's userdata, if any."""
    udata: bytes = attrs_of(msg, _BODY).get(NFTA_TABLE_USERDATA, b"")
    offset = 0
    while offset + 2 <= len(udata):
        kind, length = udata[offset], udata[offset + 1]
        if kind == NFTNL_UDATA_TABLE_COMMENT:
            return udata[offset + 2 : offset + 2 + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += 2 + length
    return None


def _be32(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def _data_value(payload: bytes) -> bytes:
    value: bytes = attrs_of(payload).get(NFTA_DATA_VALUE, b"")
    return value


def _exprs(rule_attrs: Attrs) -> List[Tuple[str, Attrs]]:
    out = []
    for elem in _list(rule_attrs.get(NFTA_RULE_EXPRESSIONS, b"")):
        fields = attrs_of(elem)
        name = fields.get(NFTA_EXPR_NAME, b"").split(b"\0", 1)[0].decode("ascii", "replace")
        out.append((name, attrs_of(fields.get(NFTA_EXPR_DATA, b""))))
    return out


def _ip(family: int, data: bytes) -> IPAddress:
    if len(data) != (4 if family == 4 else 16):
        raise ValueError(f"{len(data)} bytes are not an IPv{family} address")
    return IPAddress.from_packed(data)


def decode_rule(family: int, msg: bytes) -> Union[Rule, str]:
    """A NEWRULE message of our table mapped back to our rule types; anything else as a short text."""
    fields = attrs_of(msg, _BODY)
    chain = fields.get(NFTA_RULE_CHAIN, b"?").split(b"\0", 1)[0].decode("utf-8", "replace")
    exprs = _exprs(fields)
    try:
        return _match(family, chain, exprs)
    except (KeyError, ValueError, IndexError):
        return f"{chain}: " + " ".join(f"[{name}]" for name, _ in exprs)


def _match(family: int, chain: str, exprs: List[Tuple[str, Attrs]]) -> Rule:
    """Recognise exactly the shapes rule_expressions produces (ValueError for anything else)."""
    names = [name for name, _ in exprs]
    if names[:2] != ["meta", "cmp"]:
        raise ValueError
    key = _be32(exprs[0][1][2])
    iface = _data_value(exprs[1][1][3]).rstrip(b"\0").decode("utf-8", "replace")
    rest = exprs[2:]
    if key == NFT_META_OIFNAME and chain == "postrouting" and [n for n, _ in rest] == ["immediate", "nat"]:
        nat = rest[1][1]
        if _be32(nat[1]) != NFT_NAT_SNAT or 5 in nat:
            raise ValueError
        return SnatRule(family=family, out_iface=iface, to_addr=_ip(family, _data_value(rest[0][1][2])))
    if key != NFT_META_IIFNAME or chain != "prerouting":
        raise ValueError
    protocol = port = None
    if [n for n, _ in rest[:4]] == ["meta", "cmp", "payload", "cmp"]:
        if _be32(rest[0][1][2]) != NFT_META_L4PROTO:
            raise ValueError
        protocol = PROTOCOL_NAMES[_data_value(rest[1][1][3])[0]]
        payload = rest[2][1]
        if (_be32(payload[2]), _be32(payload[3]), _be32(payload[4])) != (NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2):
            raise ValueError
        port = int.from_bytes(_data_value(rest[3][1][3]), "big")
        rest = rest[4:]
    to_port = None
    if [n for n, _ in rest] == ["immediate", "immediate", "nat"]:
        to_port = int.from_bytes(_data_value(rest[1][1][2]), "big")
        rest = [rest[0], rest[2]]
    if [n for n, _ in rest] != ["immediate", "nat"] or _be32(rest[1][1][1]) != NFT_NAT_DNAT:
        raise ValueError
    return DnatRule(
        family=family,
        in_iface=iface,
        to_addr=_ip(family, _data_value(rest[0][1][2])),
        protocol=protocol,
        port=port,
        to_port=to_port,
    )
