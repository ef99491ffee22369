"""Command shells in the clear: the text a shell prints and the commands attackers type, found
in the first packets of TCP streams that no other inspector claimed.

After an exploit, a bind or reverse shell is a raw TCP connection carrying a shell session:
a Windows ``cmd.exe`` banner and prompt, or the one-liners used to fetch and run the next stage
(the FTP-script and TFTP downloads of the Windows worm era, ``curl | sh``, ``powershell -enc``).
IDS rule sets call these attack responses (Emerging Threats' ATTACK_RESPONSE class, Snort's
``cmd.exe`` banner rules). Each marker here names what it is evidence of; all of them are
searched in one pass of one compiled regular expression over the gathered payloads.
"""

from __future__ import annotations

import re

import numpy as np

# (what it is evidence of, literals of which every match holds one, pattern). The literals are
# found with bytes.find, which is many times faster than running the patterns over every
# payload; only payloads holding one are matched against the patterns.
MARKERS: tuple[tuple[str, tuple[bytes, ...], bytes], ...] = (
    ("windows command prompt banner", (b"Microsoft Windows ",), rb"Microsoft Windows (?:XP |2000 |NT )?\[Version \d"),
    ("windows command prompt", (b":\\",),
     rb"(?:^|\n)[A-Z]:\\(?:WINDOWS|Windows|WINNT|Users|Documents and Settings)[^\r\n>]{0,80}>"),
    ("ftp script written by echo", (b"echo ",), rb"echo (?:open|user) [^\r\n]{1,80}>>? ?\w"),
    ("scripted ftp download", (b"-s:",), rb"ftp (?:-[nvid] )*-s:\S"),
    ("tftp download", (b"tftp",), rb"tftp(?:\.exe)? -i \S+ (?:GET|get) "),
    ("cmd /c execution", (b"cmd",), rb"cmd(?:\.exe)? /[ck] "),
    ("encoded powershell", (b"powershell",),
     rb"powershell(?:\.exe)?[^\r\n]{0,60} -(?:enc|EncodedCommand|e) [A-Za-z0-9+/=]{16}"),
    ("download piped to a shell", (b"wget", b"curl"), rb"(?:wget|curl)[^\r\n|;]{1,200}\|\s*(?:sudo )?(?:ba|da|z)?sh\b"),
    ("interactive shell spawned", (b"/bin/",), rb"/bin/(?:ba|da)?sh -i\b"),
    ("shell without job control", (b"no job control", b"can't access tty"),
     rb"(?:bash|sh): (?:no job control in this shell|0: can't access tty)"),
    ("root identity printed", (b"uid=0(root)",), rb"uid=0\(root\) gid=0\(root\)"),
    ("downloaded file made executable and run", (b"chmod +x",), rb"chmod \+x [^\r\n;]{1,100}[;&]+ ?\./"),
)
_PATTERN = re.compile(b"|".join(b"(" + p + b")" for _, _, p in MARKERS))
_LITERALS = tuple(sorted({lit for _, lits, _ in MARKERS for lit in lits}))
# the literals as one byte array for the scanning kernel (kernels.l7_select.payloads_with_literals)
LITERAL_BYTES = np.frombuffer(b"".join(_LITERALS), np.uint8)
LITERAL_OFFSETS = np.cumsum([0] + [len(lit) for lit in _LITERALS]).astype(np.int64)
LITERAL_FIRST = np.zeros(256, np.uint8)
LITERAL_FIRST[[lit[0] for lit in _LITERALS]] = 1
# streams on these ports carry shells or shell-like text by design (telnet, rlogin, rsh) or
# commonly quote commands (mail, news, web): a marker there is weaker evidence
TEXT_SERVICE_PORTS = frozenset({23, 25, 80, 110, 119, 143, 513, 514, 587, 993, 995, 8000, 8008, 8080, 8888})

# file-transfer and file-sharing services carry file contents, which may quote any command
FILE_TRANSFER_PORTS = frozenset({20, 139, 445, 873, 2049, 2811, 3260})
GRIDFTP_DATA = range(50000, 51001)


def is_file_transfer(sport: int, dport: int) -> bool:
    return (sport in FILE_TRANSFER_PORTS or dport in FILE_TRANSFER_PORTS or sport in GRIDFTP_DATA
            or dport in GRIDFTP_DATA)


def find_markers(data: bytes, offsets: np.ndarray) -> list[tuple[int, str, str]]:
    """``(j, marker name, matched text)`` for each payload ``data[offsets[j]:offsets[j+1]]`` that
    holds a marker (the first one found per payload); a match across two payloads is no match."""
    out = []
    for j in _candidates(data, offsets):
        m = _PATTERN.search(data[offsets[j]:offsets[j + 1]])
        if m is not None:
            out.append((j, MARKERS[m.lastindex - 1][0], m.group(0)[:120].decode("latin-1")))
    return out


def _candidates(data: bytes, offsets: np.ndarray) -> list[int]:
    """Payloads that hold at least one marker literal, in order."""
    found: set[int] = set()
    for lit in _LITERALS:
        pos = data.find(lit)
        while pos >= 0:
            j = int(np.searchsorted(offsets, pos, side="right")) - 1
            if pos + len(lit) <= offsets[j + 1]:
                found.add(j)
            pos = data.find(lit, max(pos + 1, int(offsets[j + 1]) - len(lit) + 1))
    return sorted(found)
