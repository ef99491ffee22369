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

MARKERS: tuple[tuple[str, bytes], ...] = (
    ("windows command prompt banner", rb"Microsoft Windows (?:XP |2000 |NT )?\[Version \d"),
    ("windows command prompt", rb"(?:^|\n)[A-Z]:\\(?:WINDOWS|Windows|WINNT|Users|Documents and Settings)[^\r\n>]{0,80}>"),
    ("ftp script written by echo", rb"echo (?:open|user) [^\r\n]{1,80}>>? ?\w"),
    ("scripted ftp download", rb"ftp (?:-[nvid] )*-s:\S"),
    ("tftp download", rb"tftp(?:\.exe)? -i \S+ (?:GET|get) "),
    ("cmd /c execution", rb"cmd(?:\.exe)? /[ck] "),
    ("encoded powershell", rb"powershell(?:\.exe)?[^\r\n]{0,60} -(?:enc|EncodedCommand|e) [A-Za-z0-9+/=]{16}"),
    ("download piped to a shell", rb"(?:wget|curl)[^\r\n|;]{1,200}\|\s*(?:sudo )?(?:ba|da|z)?sh\b"),
    ("interactive shell spawned", rb"/bin/(?:ba|da)?sh -i\b"),
    ("shell without job control", rb"(?:bash|sh): (?:no job control in this shell|0: can't access tty)"),
    ("root identity printed", rb"uid=0\(root\) gid=0\(root\)"),
    ("downloaded file made executable and run", rb"chmod \+x [^\r\n;]{1,100}[;&]+ ?\./"),
)
_PATTERN = re.compile(b"|".join(b"(" + p + b")" for _, p in MARKERS))
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
    holds a marker (the first one found per payload)."""
    out = []
    last = -1
    for m in _PATTERN.finditer(data):
        j = int(np.searchsorted(offsets, m.start(), side="right")) - 1
        if j == last or m.end() > offsets[j + 1]:
            continue  # one marker per payload; a match across two payloads is no match
        last = j
        out.append((j, MARKERS[m.lastindex - 1][0], m.group(0)[:120].decode("latin-1")))
    return out
