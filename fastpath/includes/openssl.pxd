# Extern declarations only: OpenSSL libcrypto's EVP cipher and MAC interfaces (OpenSSL 3),
# and the provider interface (provider-cipher(7)) that aead.pxd calls AES-256-GCM through.

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
    const OSSL_PROVIDER *EVP_CIPHER_get0_provider(const EVP_CIPHER *cipher)
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

cdef extern from "<openssl/core.h>" nogil:
    ctypedef struct OSSL_DISPATCH:
        int function_id
        void (*function)()
    ctypedef struct OSSL_ALGORITHM:
        const char *algorithm_names
        const OSSL_DISPATCH *implementation
    ctypedef struct OSSL_PROVIDER:
        pass

cdef extern from "<openssl/core_dispatch.h>" nogil:
    enum:
        OSSL_OP_CIPHER
        OSSL_FUNC_CIPHER_NEWCTX
        OSSL_FUNC_CIPHER_FREECTX
        OSSL_FUNC_CIPHER_ENCRYPT_INIT
        OSSL_FUNC_CIPHER_DECRYPT_INIT
        OSSL_FUNC_CIPHER_UPDATE
        OSSL_FUNC_CIPHER_FINAL
        OSSL_FUNC_CIPHER_GET_CTX_PARAMS
        OSSL_FUNC_CIPHER_SET_CTX_PARAMS

# provider-cipher(7)'s functions, as a provider's dispatch table gives them.
ctypedef void *(*cipher_newctx_fn)(void *provctx) noexcept nogil
ctypedef void (*cipher_freectx_fn)(void *cctx) noexcept nogil
ctypedef int (*cipher_init_fn)(void *cctx, const unsigned char *key, size_t keylen,
                               const unsigned char *iv, size_t ivlen,
                               const OSSL_PARAM *params) noexcept nogil
ctypedef int (*cipher_update_fn)(void *cctx, unsigned char *out, size_t *outl,
                                 size_t outsize, const unsigned char *inp,
                                 size_t inl) noexcept nogil
ctypedef int (*cipher_final_fn)(void *cctx, unsigned char *out, size_t *outl,
                                size_t outsize) noexcept nogil
ctypedef int (*cipher_get_params_fn)(void *cctx, OSSL_PARAM *params) noexcept nogil
ctypedef int (*cipher_set_params_fn)(void *cctx, const OSSL_PARAM *params) noexcept nogil

cdef extern from "<openssl/provider.h>" nogil:
    const OSSL_ALGORITHM *OSSL_PROVIDER_query_operation(const OSSL_PROVIDER *prov,
                                                        int operation_id, int *no_cache)
    void OSSL_PROVIDER_unquery_operation(const OSSL_PROVIDER *prov, int operation_id,
                                         const OSSL_ALGORITHM *algs)
    void *OSSL_PROVIDER_get0_provider_ctx(const OSSL_PROVIDER *prov)

cdef extern from "<openssl/crypto.h>" nogil:
    void OPENSSL_cleanse(void *ptr, size_t len)
    int CRYPTO_memcmp(const void *a, const void *b, size_t len)
