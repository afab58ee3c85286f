# Extern declarations only: libgcrypt's cipher interface (AES-256-GCM for aead.pxd).

cdef extern from "<gcrypt.h>" nogil:
    ctypedef struct gcry_cipher_handle:
        pass
    ctypedef gcry_cipher_handle *gcry_cipher_hd_t
    ctypedef unsigned int gcry_error_t

    enum:
        GCRY_CIPHER_AES256
        GCRY_CIPHER_MODE_GCM
        GCRYCTL_DISABLE_SECMEM
        GCRYCTL_INITIALIZATION_FINISHED
        GCRYCTL_INITIALIZATION_FINISHED_P

    const char *gcry_check_version(const char *req_version)
    gcry_error_t gcry_control(int cmd, ...)
    gcry_error_t gcry_cipher_open(gcry_cipher_hd_t *handle, int algo, int mode,
                                  unsigned int flags)
    void gcry_cipher_close(gcry_cipher_hd_t h)
    gcry_error_t gcry_cipher_setkey(gcry_cipher_hd_t h, const void *key, size_t keylen)
    gcry_error_t gcry_cipher_setiv(gcry_cipher_hd_t h, const void *iv, size_t ivlen)
    gcry_error_t gcry_cipher_authenticate(gcry_cipher_hd_t h, const void *abuf,
                                          size_t abuflen)
    gcry_error_t gcry_cipher_encrypt(gcry_cipher_hd_t h, void *out, size_t outsize,
                                     const void *inp, size_t inlen)
    gcry_error_t gcry_cipher_decrypt(gcry_cipher_hd_t h, void *out, size_t outsize,
                                     const void *inp, size_t inlen)
    gcry_error_t gcry_cipher_gettag(gcry_cipher_hd_t h, void *outtag, size_t taglen)
    gcry_error_t gcry_cipher_checktag(gcry_cipher_hd_t h, const void *intag, size_t taglen)
