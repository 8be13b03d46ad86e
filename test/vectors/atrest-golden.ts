// Golden vectors written by atrest itself, once, on 2026-11-28 (Node 20.20.2), from the fixed inputs in
// golden-setup.ts. Provenance: each one was decrypted independently with Go 1.26.8 (crypto/aes,
// crypto/cipher, crypto/hmac and golang.org/x/crypto nacl/secretbox — the packages kube-apiserver uses) by
// test/vectors/crosscheck/main.go, and gave `pandas are the best`; crosscheck.test.ts repeats that on
// every run.
//
// IMPORTANT: changing this makes stored data unreadable. These bytes are what atrest wrote; if a test over
// them fails, the code changed the storage format, not the vector. Never regenerate them to make a test
// pass.

export const RECORDED_GOLDEN: Readonly<Record<string, string>> = {
  'aescbc-256':
    '6b38733a656e633a6165736362633a76313a6b6579313ae16de79b3701911f599b0cb1688dd741cfc1b4a579' +
    'fa43c76f259cac23696b5bb033a909ea3d4b1b917ee948f3c48073',
  'aescbc-128':
    '6b38733a656e633a6165736362633a76313a6b6579313a5e2cd66e218084c2d50d0c1a641c72a764b8cc57f0' +
    'ed76b7da8a3dafc532407d936dcb48845f48c746c4b3203e00732b',
  'aesgcm-256':
    '6b38733a656e633a61657367636d3a76313a6b6579313a558feab5a797b374ac8e7f06453d6c9db0db478c7e' +
    'c72b12688a9671eca46b291bcafc68941680c61867254073ed7a',
  'aesgcm-128':
    '6b38733a656e633a61657367636d3a76313a6b6579313aba8775f88132f2fc9eb5aafb03c58543c290fb2759' +
    '9b8b6081de00b3bb8b1adaa93b0c38ff453198e7a8dc827af924',
  'secretbox-256':
    '6b38733a656e633a736563726574626f783a76313a6b6579313abd85696ea89b974d9567696144ced9040708' +
    'fc6eff47eeab497f5338dbc6ebaec8931e99485cdc5ce32f59917275026009bfdeae176ae1b3dec234',
  'kms-v1':
    '6b38733a656e633a6b6d733a76313a676f6c64656e3a003c830b73537d9bbd2c87bfd18a2efa393fb7191f42' +
    'dd9a5624c8bdcc9f2642815b94b1e5ff5b02b39e5d8878c631bcde71eec9366b1f8a776783d146a9ee08a0a9' +
    'a1303e71cd8453b299671cd358e58b90543c809363e4c9afde7193969a6c5d4bab4334d596af4769a0c9c8',
  'kms-v1-legacy-cbc':
    '6b38733a656e633a6b6d733a76313a676f6c64656e3a003c38e9c56210bd57a440c3eb5c653f7f07c79f2d93' +
    'b1459d3e958e4756ef0feba912d7b597ae620f35ab86a163962b202446bf295c18a16408b3f37c4dcaa2c73b' +
    '08462ff5797175a5e0ea695c92bfa0365a9d7f93b8b549d3b36752cbdacefa988347a47463b44742f38f8ab4',
  'kms-v2':
    '6b38733a656e633a6b6d733a76323a676f6c64656e3a0a4ff78f7da6bb6dd58e9d71c2517b922582375bb7f9' +
    'd1922ad1a868664a9f00ddd0cfc1bb314ab8bf7ad9312682feb7155859a0ecdcfc78090f6ea6fec2455c0015' +
    'ebabfb12fd72d052f8fcc4d866aeb4120c676f6c64656e2d6b65792d311a3cc7a4ab00558a16a3169573cf81' +
    '250effbe80a9de9b1b388f699941781dc44180617f16112779e0ea7062b71fa27fd3dcdb8488375a146ce83d' +
    'a3f0e722210a1c76657273696f6e2e656e6372797074696f6e2e72656d6f74652e696f1201312801',
};
