"""Bundled sample data: cybersecurity multiple-choice questions written by this project.

Every question comes from a small table of facts below (no benchmark question is
copied). Each fact is asked in four wordings that keep the fact's key term and
share the same four options in the same order, so all four have the same answer
letter. That is deliberate: a tiny model trained from scratch for a few hundred
steps can learn "this fact -> this letter" from three wordings and be checked on
the fourth, which makes the end-to-end pipeline testable on a CPU.

Answer letters are balanced over facts (each letter for a quarter of them, +-1)
and, like the distractors (drawn from the same category), chosen by a seeded
``random.Random``: the same seed writes a byte-identical file.

A second set, ``--set aux`` (``data/sample/aux_mcq.json``), asks about a related topic, networking
and systems administration (HTTP status codes, OSI layers, file permissions, shell commands, subnet
sizes, TCP flags), in the same way: the smoke experiment's ``multi_task`` method trains on it as an
auxiliary task. None of its questions is one of the first set's.

Usage
-----
``python tools/sample_data.py data/sample/cyber_mcq.json [--seed 0]``,
``python tools/sample_data.py data/sample/aux_mcq.json --set aux`` (with the project installed:
``make install``)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import typing as tp
from collections import Counter
from dataclasses import dataclass

from launch.questions.data import Question
from launch.spec.config import LETTERS
from launch.store.fsio import atomic_write_json

DEFAULT_PATH = "data/sample/cyber_mcq.json"
AUX_PATH = "data/sample/aux_mcq.json"


@dataclass(frozen=True)
class SampleQuestion:
    """One generated question and the fact it asks about.

    Attributes
    ----------
    fact_id:
        ``<category>-<n>``; the four wordings of a fact share it.
    question, answers, solution:
        As in :class:`launch.questions.data.Question`.
    """

    fact_id: str
    question: str
    answers: dict[str, str]
    solution: str

    def to_question(self) -> Question:
        """The :class:`launch.questions.data.Question` without the fact id."""
        return Question(question=self.question, answers=dict(self.answers), solution=self.solution)

    def to_record(self) -> dict:
        """The CyberMetric record (no ``fact_id``: the file has no extra keys)."""
        return self.to_question().to_record()


@dataclass(frozen=True)
class _Category:
    """Facts that share question templates and a pool of options.

    ``facts`` are ``(term, answer)`` or ``(term, answer, family)``: facts of the same
    family never appear as each other's distractors because one could be read as
    also correct (e.g. phishing vs. vishing). ``extra`` adds wrong options to the pool.
    """

    name: str
    templates: tuple[str, str, str, str]
    facts: tuple[tuple[str, ...], ...]
    extra: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the facts

_PORT = _Category(
    "port",
    (
        "Which port does {} use by default?",
        "What is the default port number for {}?",
        "By default, {} listens on which port?",
        "A firewall must allow {} on its standard port. Which port is it?",
    ),
    (
        ("HTTP", "80"),
        ("HTTPS", "443"),
        ("SSH", "22"),
        ("Telnet", "23"),
        ("the FTP control channel", "21"),
        ("SMTP", "25"),
        ("DNS", "53"),
        ("POP3", "110", "pop"),
        ("POP3 over TLS (POP3S)", "995", "pop"),
        ("IMAP", "143", "imap"),
        ("IMAP over TLS (IMAPS)", "993", "imap"),
        ("LDAP", "389", "ldap"),
        ("LDAP over TLS (LDAPS)", "636", "ldap"),
        ("RDP", "3389"),
        ("SMB", "445"),
        ("NTP", "123"),
        ("SNMP", "161"),
        ("Kerberos", "88"),
        ("MySQL", "3306"),
        ("Microsoft SQL Server", "1433"),
        ("a RADIUS authentication server", "1812"),
    ),
)

_BLOCK = _Category(
    "block",
    (
        "What is the block size of {}?",
        "{} encrypts data in blocks of what size?",
        "How large is one block of the {} cipher?",
        "Which block size does {} use?",
    ),
    (
        ("AES", "128 bits"),
        ("DES", "64 bits"),
        ("Triple DES", "64 bits"),
        ("Blowfish", "64 bits"),
        ("Twofish", "128 bits"),
        ("Camellia", "128 bits"),
    ),
    extra=("32 bits", "96 bits", "192 bits", "256 bits"),
)

_DIGEST = _Category(
    "digest",
    (
        "What is the digest size of {}?",
        "How long is a {} hash value?",
        "{} produces a digest of what length?",
        "Which output length does the {} hash function have?",
    ),
    (
        ("MD5", "128 bits"),
        ("SHA-1", "160 bits"),
        ("SHA-224", "224 bits"),
        ("SHA-256", "256 bits"),
        ("SHA-384", "384 bits"),
        ("SHA-512", "512 bits"),
        ("SHA3-256", "256 bits"),
        ("RIPEMD-160", "160 bits"),
    ),
    extra=("64 bits", "96 bits"),
)

_KEY = _Category(
    "key",
    (
        "What key size does {} use?",
        "How long is a {} key?",
        "{} takes a key of what length?",
        "Which key length is defined for the {} cipher?",
    ),
    (("ChaCha20", "256 bits"), ("IDEA", "128 bits")),
    extra=("56 bits", "64 bits", "112 bits", "168 bits", "512 bits"),
)

_ALGO = _Category(
    "algotype",
    (
        "Which type of cryptographic algorithm is {}?",
        "{} belongs to which class of algorithm?",
        "How is {} classified among cryptographic primitives?",
        "What kind of cryptographic primitive is {}?",
    ),
    (
        ("AES", "Symmetric cipher"),
        ("ChaCha20", "Symmetric cipher"),
        ("Twofish", "Symmetric cipher"),
        ("RC4", "Symmetric cipher"),
        ("RSA", "Asymmetric algorithm"),
        ("ECDSA", "Asymmetric algorithm"),
        ("Diffie-Hellman", "Asymmetric algorithm"),
        ("ElGamal", "Asymmetric algorithm"),
        ("SHA-256", "Hash function"),
        ("MD5", "Hash function"),
        ("BLAKE2b", "Hash function"),
        ("PBKDF2", "Key derivation function"),
        ("HKDF", "Key derivation function"),
        ("scrypt", "Key derivation function"),
        ("HMAC", "Message authentication code"),
        ("CMAC", "Message authentication code"),
    ),
)

_ATTACK = _Category(
    "attack",
    (
        "Which attack {}?",
        "What is the name of the attack that {}?",
        "Which term describes an attack that {}?",
        "In cybersecurity, which attack technique {}?",
    ),
    (
        ("inserts malicious SQL statements into input fields to manipulate a database", "SQL injection", "inj"),
        ("injects malicious scripts into web pages viewed by other users", "Cross-site scripting", "inj"),
        ("makes a logged-in user's browser send an unwanted request to a trusted site", "Cross-site request forgery"),
        ("sends fraudulent emails posing as a trusted sender to steal credentials", "Phishing", "phish"),
        ("uses fraudulent phone calls to trick victims into revealing information", "Vishing", "phish"),
        ("uses fraudulent SMS text messages to trick victims into revealing information", "Smishing", "phish"),
        ("secretly intercepts and possibly alters traffic between two parties", "Man-in-the-middle", "mitm"),
        (
            "floods a target with traffic from many compromised hosts to make it unavailable",
            "Distributed denial of service",
        ),
        ("systematically tries every possible key or password until one works", "Brute force", "guess"),
        ("tries passwords taken from a list of common words", "Dictionary attack", "guess"),
        ("reuses username and password pairs leaked from another site", "Credential stuffing"),
        ("tries a few common passwords against many different accounts", "Password spraying", "guess"),
        ("cracks password hashes using precomputed tables of hash chains", "Rainbow table attack"),
        ("forges ARP replies to link the attacker's MAC address to another host's IP address", "ARP spoofing", "mitm"),
        ("inserts forged records into a DNS resolver's cache to redirect users", "DNS cache poisoning"),
        ("takes over a user's session by stealing the session token", "Session hijacking"),
        ("tricks users into clicking hidden elements layered over a visible page", "Clickjacking"),
        ("writes data past the end of a memory buffer to overwrite adjacent memory", "Buffer overflow"),
        ("uses ../ sequences to read files outside the web root", "Path traversal"),
        ("makes a server send requests to internal resources chosen by the attacker", "Server-side request forgery"),
        ("captures valid authentication messages and resends them later", "Replay attack"),
        ("registers misspelled versions of popular domain names", "Typosquatting"),
        ("follows an authorized person through a secured door without badging in", "Tailgating"),
    ),
)

_MALWARE = _Category(
    "malware",
    (
        "Which type of malware {}?",
        "What is malware called that {}?",
        "Which malware category {}?",
        "Malicious software that {} is known as what?",
    ),
    (
        ("encrypts a victim's files and demands payment for the key", "Ransomware"),
        ("copies itself across networks without any user action", "Worm"),
        ("poses as legitimate software to trick users into running it", "Trojan horse"),
        ("hides its presence while keeping privileged access to a system", "Rootkit"),
        ("records a user's keystrokes to capture passwords", "Keylogger"),
        ("stays dormant until a specific condition triggers its payload", "Logic bomb"),
        ("attaches itself to a host file and spreads when that file is run", "Virus"),
    ),
)

_OWASP_NAMES = (
    ("A01", "Broken Access Control"),
    ("A02", "Cryptographic Failures"),
    ("A03", "Injection"),
    ("A04", "Insecure Design"),
    ("A05", "Security Misconfiguration"),
    ("A06", "Vulnerable and Outdated Components"),
    ("A07", "Identification and Authentication Failures"),
    ("A08", "Software and Data Integrity Failures"),
    ("A09", "Security Logging and Monitoring Failures"),
    ("A10", "Server-Side Request Forgery"),
)

_OWASP = _Category(
    "owasp",
    (
        "Which risk is {} in the OWASP Top 10 2021?",
        "In the OWASP Top 10 (2021), what is category {}?",
        "What does OWASP Top 10 2021 entry {} cover?",
        "Which category has the code {} in the 2021 OWASP Top 10?",
    ),
    _OWASP_NAMES,
    # OWASP 2017 names that the 2021 list dropped or renamed: wrong for 2021.
    extra=("Sensitive Data Exposure", "XML External Entities", "Insecure Deserialization"),
)

_OWASP_CODE = _Category(
    "owaspcode",
    (
        "Which code does the OWASP Top 10 2021 assign to {}?",
        "In the OWASP Top 10 (2021), {} is listed under which code?",
        "What is the OWASP Top 10 2021 identifier for {}?",
        "Where does {} rank in the OWASP Top 10 2021?",
    ),
    tuple((name, code) for code, name in _OWASP_NAMES),
)

_STANDARD = _Category(
    "standard",
    (
        "What does {} primarily address?",
        "{} is mainly concerned with which area?",
        "Which area is the focus of {}?",
        "What is the main subject of {}?",
    ),
    (
        ("ISO/IEC 27001", "Information security management systems", "iso"),
        ("ISO/IEC 27002", "Guidance on information security controls", "controls"),
        ("ISO/IEC 27005", "Information security risk management", "iso"),
        ("ISO 22301", "Business continuity management"),
        ("PCI DSS", "Protection of payment card data"),
        ("HIPAA", "Protection of US health information"),
        ("GDPR", "Protection of personal data in the EU"),
        ("FIPS 140-3", "Security of cryptographic modules"),
        ("NIST SP 800-53", "Catalog of security and privacy controls", "controls"),
        ("NIST SP 800-61", "Computer security incident handling"),
        ("COBIT", "Governance of enterprise IT"),
        ("ITIL", "IT service management"),
        ("MITRE ATT&CK", "Adversary tactics and techniques"),
        ("CVSS", "Scoring vulnerability severity"),
    ),
)

_CSF = _Category(
    "csf",
    (
        "Which NIST CSF 2.0 function covers {}?",
        "In NIST CSF 2.0, which function includes {}?",
        "Which function of the NIST Cybersecurity Framework 2.0 addresses {}?",
        "According to NIST CSF 2.0, which function is about {}?",
    ),
    (
        ("setting and monitoring the cybersecurity risk strategy and policy", "Govern"),
        ("understanding the organization's assets and current cybersecurity risks", "Identify"),
        ("safeguards such as access control, awareness training and data security", "Protect"),
        ("finding and analyzing possible cybersecurity attacks and compromises", "Detect"),
        ("taking action about a detected cybersecurity incident", "Respond"),
        ("restoring assets and operations affected by a cybersecurity incident", "Recover"),
    ),
)

_PRINCIPLE = _Category(
    "principle",
    (
        "Which security concept means {}?",
        "What is the term for {}?",
        "Which security principle describes {}?",
        "{} is known as what?",
    ),
    (
        ("ensuring information is disclosed only to authorized parties", "Confidentiality"),
        ("ensuring data is not altered without authorization", "Integrity"),
        ("ensuring systems and data are accessible when needed", "Availability"),
        ("preventing a sender from denying that they sent a message", "Non-repudiation"),
        ("granting each user only the access needed for their job", "Least privilege"),
        ("splitting a critical task so that no single person can complete it alone", "Separation of duties"),
        ("layering several independent security controls", "Defense in depth"),
        ("requiring two or more different kinds of evidence to log in", "Multi-factor authentication"),
        ("verifying every access request instead of trusting network location", "Zero trust"),
        ("using one login to access several applications", "Single sign-on"),
        ("assigning permissions to job roles instead of individuals", "Role-based access control"),
        ("enforcing access through system-assigned labels and clearances", "Mandatory access control"),
        ("letting resource owners decide who may access their resources", "Discretionary access control"),
        ("adding a random value to each password before hashing it", "Salting"),
    ),
)

_TOOL = _Category(
    "tool",
    (
        "What is {} called?",
        "Which term names {}?",
        "Which of the following is {}?",
        "What do security teams call {}?",
    ),
    (
        ("a decoy system that lures attackers so their activity can be studied", "Honeypot"),
        ("an isolated environment for running untrusted code safely", "Sandbox"),
        ("a network segment that hosts public services apart from the internal network", "DMZ"),
        ("a system that collects and correlates logs from many sources for security monitoring", "SIEM"),
        ("a system that monitors traffic and raises alerts without blocking it", "Intrusion detection system"),
        ("an inline system that detects and blocks malicious traffic", "Intrusion prevention system"),
        ("a trusted entity that issues and signs digital certificates", "Certificate authority"),
        ("a filter that inspects HTTP traffic to block attacks on web applications", "Web application firewall"),
        ("an authorized simulated attack to find exploitable weaknesses", "Penetration test"),
        ("the maximum acceptable time to restore a service after a disruption", "Recovery time objective"),
        ("the maximum acceptable data loss measured in time", "Recovery point objective"),
    ),
)

_PROTOCOL = _Category(
    "protocol",
    (
        "Which protocol {}?",
        "What is the name of the protocol that {}?",
        "Which of these protocols {}?",
        "In networking, which protocol {}?",
    ),
    (
        ("maps IP addresses to MAC addresses on a local network", "ARP"),
        ("translates domain names into IP addresses", "DNS", "dns"),
        ("automatically assigns IP addresses to hosts", "DHCP"),
        ("synchronizes clocks between computers over a network", "NTP"),
        ("authenticates users with tickets from a key distribution center", "Kerberos"),
        ("authenticates and encrypts IP packets at the network layer", "IPsec"),
        ("lists in DNS the mail servers allowed to send for a domain", "SPF"),
        ("adds a domain's cryptographic signature to outgoing email", "DKIM"),
        ("tells receivers how to handle mail that fails SPF or DKIM checks", "DMARC"),
        ("adds origin authentication to DNS responses with digital signatures", "DNSSEC", "dns"),
        ("grants applications delegated access to resources without sharing passwords", "OAuth 2.0", "oauth"),
        ("exchanges XML-based authentication assertions for single sign-on", "SAML"),
        ("adds an identity layer on top of OAuth 2.0", "OpenID Connect", "oauth"),
    ),
)

CATEGORIES: tuple[_Category, ...] = (
    _PORT,
    _BLOCK,
    _DIGEST,
    _KEY,
    _ALGO,
    _ATTACK,
    _MALWARE,
    _OWASP,
    _OWASP_CODE,
    _STANDARD,
    _CSF,
    _PRINCIPLE,
    _TOOL,
    _PROTOCOL,
)


# --------------------------------------------------------------------------- the auxiliary set's facts

_STATUS = _Category(
    "status",
    (
        "Which HTTP status code means {}?",
        "A web server answers with which status code when {}?",
        "What is the HTTP response code for {}?",
        "Which status code does HTTP define for {}?",
    ),
    (
        ("the request succeeded", "200"),
        ("a new resource was created", "201"),
        ("success with no content in the body", "204"),
        ("a resource moved permanently", "301"),
        ("a cached copy is still valid (not modified)", "304"),
        ("a malformed request (bad request)", "400"),
        ("authentication is required (unauthorized)", "401"),
        ("access is refused to an authenticated client (forbidden)", "403"),
        ("the resource was not found", "404"),
        ("the method is not allowed on the resource", "405"),
        ("too many requests from one client", "429"),
        ("an internal server error", "500"),
        ("a bad gateway", "502"),
        ("the service is unavailable", "503"),
        ("a gateway timeout", "504"),
    ),
)

_OSI = _Category(
    "osi",
    (
        "At which OSI layer does {} operate?",
        "Which layer of the OSI model does {} belong to?",
        "In the OSI reference model, {} works at which layer?",
        "Where in the OSI model is {} placed?",
    ),
    (
        ("IP", "Network layer"),
        ("ICMP", "Network layer"),
        ("a router", "Network layer"),
        ("Ethernet framing", "Data link layer"),
        ("a network switch", "Data link layer"),
        ("TCP", "Transport layer"),
        ("UDP", "Transport layer"),
        ("HTTP", "Application layer"),
        ("SMTP mail transfer", "Application layer"),
        ("a hub that repeats electrical signals", "Physical layer"),
        ("a fiber-optic cable", "Physical layer"),
    ),
    extra=("Session layer", "Presentation layer"),
)

_CHMOD = _Category(
    "chmod",
    (
        "Which octal mode gives a file the permissions {}?",
        "In chmod's octal notation, what is {}?",
        "What octal number corresponds to the permission string {}?",
        "A file listed as {} has which octal mode?",
    ),
    (
        ("rwxr-xr-x", "755"),
        ("rw-r--r--", "644"),
        ("rwx------", "700"),
        ("rw-------", "600"),
        ("rwxrwxrwx", "777"),
        ("r--r--r--", "444"),
        ("rwxr-x---", "750"),
        ("rw-rw-r--", "664"),
    ),
)

_COMMAND = _Category(
    "command",
    (
        "Which Linux command {}?",
        "On a Linux shell, which command {}?",
        "What is the standard Unix command that {}?",
        "A system administrator uses which command when it {}?",
    ),
    (
        ("lists the files in a directory", "ls"),
        ("changes a file's permission bits", "chmod"),
        ("changes a file's owner", "chown"),
        ("shows a snapshot of running processes", "ps"),
        ("searches text for lines matching a pattern", "grep"),
        ("sends a signal to a process by its ID", "kill"),
        ("prints the current working directory", "pwd"),
        ("shows disk space used by file systems", "df"),
        ("runs a command as another user, usually root", "sudo"),
        ("copies files securely over SSH", "scp"),
        ("shows the last lines of a file", "tail"),
        ("traces the route packets take to a host", "traceroute"),
    ),
)

_SUBNET = _Category(
    "subnet",
    (
        "How many usable host addresses does an IPv4 {} subnet have?",
        "An IPv4 network with prefix length {} offers how many usable hosts?",
        "What is the number of assignable host addresses in a {} IPv4 network?",
        "How many hosts can be addressed in an IPv4 subnet with mask {}?",
    ),
    (
        ("/24", "254"),
        ("/25", "126"),
        ("/26", "62"),
        ("/27", "30"),
        ("/28", "14"),
        ("/29", "6"),
        ("/30", "2"),
        ("/16", "65534"),
    ),
)

_TCP_FLAG = _Category(
    "tcpflag",
    (
        "Which TCP flag {}?",
        "In a TCP header, which flag {}?",
        "What is the name of the TCP control bit that {}?",
        "Which of the TCP flags {}?",
    ),
    (
        ("opens a connection in the three-way handshake", "SYN"),
        ("acknowledges received data", "ACK"),
        ("closes a connection gracefully", "FIN"),
        ("aborts a connection at once", "RST"),
        ("asks the receiver to pass buffered data to the application", "PSH"),
        ("marks data as urgent", "URG"),
    ),
)

AUX_CATEGORIES: tuple[_Category, ...] = (_STATUS, _OSI, _CHMOD, _COMMAND, _SUBNET, _TCP_FLAG)
SETS = {"cyber": (CATEGORIES, DEFAULT_PATH), "aux": (AUX_CATEGORIES, AUX_PATH)}
"""The sample sets: their categories and the file each is committed as."""


# --------------------------------------------------------------------------- generation


def _phrase(template: str, term: str) -> str:
    """Fill a template; a term that starts the sentence gets a capital letter."""
    text = template.format(term)
    return text[0].upper() + text[1:]


def _distractor_pool(cat: _Category, fact: tuple[str, ...]) -> list[str]:
    """Wrong options for ``fact``: other answers of its category minus its family's, plus extras."""
    answer = fact[1]
    family = fact[2] if len(fact) > 2 else None
    excluded = {answer}
    if family is not None:
        excluded |= {f[1] for f in cat.facts if len(f) > 2 and f[2] == family}
    pool: list[str] = []
    for option in [f[1] for f in cat.facts] + list(cat.extra):
        if option not in excluded and option not in pool:  # ordered unique: keeps the RNG deterministic
            pool.append(option)
    return pool


def _all_facts(categories: tuple[_Category, ...]) -> list[tuple[_Category, int, tuple[str, ...]]]:
    return [(cat, i, fact) for cat in categories for i, fact in enumerate(cat.facts)]


def generate(seed: int = 0, categories: tuple[_Category, ...] = CATEGORIES) -> list[SampleQuestion]:
    """All sample questions: four wordings per fact, facts in table order.

    Parameters
    ----------
    seed:
        Seeds the answer letters (balanced over facts) and the distractors.
    categories:
        The set: :data:`CATEGORIES` (the cybersecurity questions) or :data:`AUX_CATEGORIES`.
    """
    rng = random.Random(seed)
    facts = _all_facts(categories)
    letters = [LETTERS[i % len(LETTERS)] for i in range(len(facts))]
    rng.shuffle(letters)  # a shuffled balanced list: each letter for a quarter of the facts, +-1
    out: list[SampleQuestion] = []
    for (cat, i, fact), letter in zip(facts, letters):
        term, answer = fact[0], fact[1]
        wrong = rng.sample(_distractor_pool(cat, fact), len(LETTERS) - 1)
        slot = LETTERS.index(letter)
        options = wrong[:slot] + [answer] + wrong[slot:]
        answers = dict(zip(LETTERS, options))
        for template in cat.templates:
            out.append(SampleQuestion(f"{cat.name}-{i:02d}", _phrase(template, term), answers, letter))
    return out


def write(path: str | os.PathLike = DEFAULT_PATH, seed: int = 0, sample: str = "cyber") -> list[SampleQuestion]:
    """Write the ``sample`` set (a key of :data:`SETS`) as CyberMetric JSON ``{"questions": [...]}`` atomically;
    return it."""
    questions = generate(seed, SETS[sample][0])
    atomic_write_json(path, {"questions": [q.to_record() for q in questions]})
    return questions


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``python tools/sample_data.py OUT [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python tools/sample_data.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help=f"output JSON (default {DEFAULT_PATH}, with --set aux {AUX_PATH})")
    parser.add_argument("--seed", type=int, default=0, help="seed of letters and distractors (default 0)")
    parser.add_argument("--set", choices=list(SETS), default="cyber", help="which sample (default cyber)")
    args = parser.parse_args(argv)
    args.out = args.out or SETS[args.set][1]
    questions = write(args.out, args.seed, args.set)
    n_facts = len({q.fact_id for q in questions})
    counts = Counter(q.solution for q in questions)
    letters = ", ".join(f"{k} {counts[k]}" for k in LETTERS)
    print(f"wrote {args.out}: {len(questions)} questions, {n_facts} facts; letters {letters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
