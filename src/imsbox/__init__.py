"""imsbox: an IMS network with RCS messaging and SIP telephony services."""

__version__ = "0.1.0"
