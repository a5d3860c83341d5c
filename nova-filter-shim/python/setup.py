# All metadata is in setup.cfg (setuptools declarative config); this file
# lets `pip install -e` and DevStack's setup_develop work with the setuptools
# Debian ships (no pbr, no PyPI needed).
import setuptools

setuptools.setup()
