# Extern declarations only: OpenSSL libcrypto's EVP cipher and MAC interfaces (OpenSSL 3).

cdef extern from "<openssl/params.h>" nogil:
    ctypedef struct OSSL_PARAM:
        pass
    OSSL_PARAM OSSL_PARAM_construct_octet_string(const char *key, void *buf, size_t bsize)
    OSSL_PARAM OSSL_PARAM_construct_end()

cdef extern from "<openssl/core_names.h>" nogil:
    const char *OSSL_CIPHER_PARAM_AEAD_TAG

cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    ctypedef struct OSSL_LIB_CTX:
        pass

    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    EVP_CIPHER *EVP_CIPHER_fetch(OSSL_LIB_CTX *ctx, const char *algorithm,
                                 const char *properties)
    void EVP_CIPHER_free(EVP_CIPHER *cipher)
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl)
    int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                          const unsigned char *key, const unsigned char *iv, int enc)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    enum:
        EVP_CTRL_AEAD_GET_TAG
        EVP_CTRL_AEAD_SET_TAG
    int EVP_CIPHER_CTX_get_params(EVP_CIPHER_CTX *ctx, OSSL_PARAM *params)
    int EVP_CIPHER_CTX_set_params(EVP_CIPHER_CTX *ctx, const OSSL_PARAM *params)

    ctypedef struct EVP_MAC:
        pass
    ctypedef struct EVP_MAC_CTX:
        pass

    EVP_MAC *EVP_MAC_fetch(OSSL_LIB_CTX *libctx, const char *algorithm, const char *properties)
    void EVP_MAC_free(EVP_MAC *mac)
    EVP_MAC_CTX *EVP_MAC_CTX_new(EVP_MAC *mac)
    void EVP_MAC_CTX_free(EVP_MAC_CTX *ctx)
    int EVP_MAC_init(EVP_MAC_CTX *ctx, const unsigned char *key, size_t keylen,
                     const OSSL_PARAM *params)
    int EVP_MAC_update(EVP_MAC_CTX *ctx, const unsigned char *data, size_t datalen)
    int EVP_MAC_final(EVP_MAC_CTX *ctx, unsigned char *out, size_t *outl, size_t outsize)

cdef extern from "<openssl/crypto.h>" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)
    int CRYPTO_memcmp(const void *a, const void *b, size_t len)
