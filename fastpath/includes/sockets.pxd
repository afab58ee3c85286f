# Extern declarations only: batched UDP I/O (recvmmsg/sendmmsg) and IPv4 socket addresses.
from libc.stdint cimport uint16_t, uint32_t
from posix.uio cimport iovec


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    enum:
        MSG_DONTWAIT
        MSG_TRUNC

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)

    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    Py_ssize_t sendmsg(int sockfd, const msghdr *msg, int flags)


cdef extern from "<netinet/udp.h>" nogil:
    enum:
        UDP_SEGMENT     # UDP GSO: one send of many equal-sized datagrams (Linux >= 4.18)
        UDP_GRO         # UDP GRO: one receive of many coalesced datagrams (Linux >= 5.0)


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr

    enum:
        AF_INET
        IPPROTO_UDP
