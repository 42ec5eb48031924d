"""RCS / OMA CPM vocabulary shared by the client (ue) and the application servers.

A protocol-level package beside sdp, msrp and content: it imports only those
and sip, so the UE and the messaging AS (and the conference and telephony ASs
after it) speak one vocabulary without importing each other.

``imsbox.rcs.cpm``
    ICSIs (:class:`~imsbox.rcs.cpm.CpmService`), the ``+g.3gpp.icsi-ref``
    feature tag, the CPM request headers, :func:`~imsbox.rcs.cpm.classify`
    (which CPM service a request is for) and the pager size limit.
``imsbox.rcs.offer``
    The SDP offer inside a CPM INVITE (plain or in multipart/mixed with CPIM,
    seed 003) and its MSRP media line.
"""
