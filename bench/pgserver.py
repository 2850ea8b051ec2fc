"""A private PostgreSQL cluster on loopback for benchmarks (as scripts/test.sh starts one), which a
bench can stop and start again to measure an outage. Runs as the postgres user when started as root."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from loopback import free_port


def _bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    return str(versions[-1] / name)


class PrivatePostgres:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mpm-bench-pg-"))
        self.data, self.sock = self.dir / "pg", self.dir / "sock"
        self.data.mkdir()
        self.sock.mkdir()
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.data, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(f"{_bin('initdb')} -D {self.data} -A trust -U postgres -E UTF8")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: str) -> None:
        argv = ["su", "postgres", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self._run(f"{_bin('pg_ctl')} -D {self.data} -l {self.data}/server.log -w start -o '-p {self.port} "
                  f"-k {self.sock} -c listen_addresses=127.0.0.1 -c max_connections=200'")

    def pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._run(f"{_bin('pg_ctl')} -D {self.data} -m fast -w stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
