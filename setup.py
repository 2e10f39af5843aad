"""Doctor: fault management for NFV clouds (OPNFV Doctor's pipeline)."""

from setuptools import find_packages, setup

setup(
    name="doctor-fm",
    version="0.1.0",
    description="Fault management for NFV clouds: monitor, inspector, notifier, consumer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=[
        # the shared core, the five roles and VIM monitoring (the run-time parts)
        "doctor", "monitor", "inspector", "controller", "notifier", "consumer", "vim",
        # the `doctor` command, the end-to-end scenario, the benchmarks, the test tools
        "client", "scenario", "bench", "testkit",
    ]),
    install_requires=[
        "flask>=3.0",
        "waitress>=3.0",
        # the sample consumer's alarm intake (doctor.aio): a third of Flask-on-waitress's CPU
        "aiohttp>=3.9",
        "SQLAlchemy>=2.0",
        "aodhclient>=3.0",
        "python-novaclient>=18.0",
        "oslo.messaging>=14.0",
        # the service list: group membership (file driver by default, Redis past one machine)
        "tooz>=6",
        "redis",
        "cliff>=4",
        # VIM monitoring: passwords under Fernet, Tacker's YAML VIM config files
        "cryptography>=3.4",
        "PyYAML>=5.4",
        # auth_strategy = keystone: tokens checked by Keystone's middleware, rules by oslo.policy
        "keystonemiddleware>=10.0",
        "oslo.policy>=4.0",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.100", "scapy>=2.5", "ruff>=0.5", "mypy>=1.10",
                 "requests>=2.28"],
        "bench": ["matplotlib>=3.7"],
        # clouds.yaml and OS_* credentials for the Nova controller
        "openstack": ["openstacksdk>=1.0"],
        # doctor-vim servers sharing one PostgreSQL database (--database postgresql+psycopg://)
        "postgresql": ["psycopg[binary]>=3.1"],
    },
    entry_points={
        "console_scripts": [
            "doctor=client.main:main",
            "doctor-monitor=monitor.cli:main",
            "doctor-inspector=inspector.cli:main",
            "doctor-controller=controller.cli:main",
            "doctor-notifier=notifier.cli:main",
            "doctor-consumer=consumer.cli:main",
            "doctor-vim=vim.cli:main",
        ],
        # the drivers, chosen by name ([inspector] controller, notifier; doctor.drivers)
        "doctor.controller": ["embedded=controller.drivers:embedded",
                              "nova=controller.drivers:nova"],
        "doctor.notifier": ["http=notifier.drivers:http", "aodh=notifier.drivers:aodh"],
        # clouds.yaml `auth_type: doctor-noauth`: test clouds without Keystone
        "keystoneauth1.plugin": ["doctor-noauth=doctor.noauth:NoAuthLoader"],
    },
)
