"""The IMS core: P-CSCF, I-CSCF, S-CSCF (registrar, iFC), HSS.

Submodules are imported on demand (``from imsbox.ims.hss import Hss``) so that
loading one network function does not load the others.
"""
