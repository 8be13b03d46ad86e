// Independent check of the atrest golden vectors with Go's crypto (the packages kube-apiserver uses).
// Run by test/vectors/crosscheck.test.ts; by hand: go run . "$(node <build>/test/vectors/print-golden.js --print)"
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"
)

func secret(label string, n int) []byte {
	s := sha256.Sum256([]byte("atrest golden " + label))
	return s[:n]
}

func gcmOpen(key, data, aad []byte) []byte {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	out, err := g.Open(nil, data[:12], data[12:], aad)
	if err != nil {
		panic(err)
	}
	return out
}
func cbcOpen(key, data []byte) []byte {
	b, _ := aes.NewCipher(key)
	iv, ct := data[:16], append([]byte{}, data[16:]...)
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(ct, ct)
	p := int(ct[len(ct)-1])
	return ct[:len(ct)-p]
}

// fake KMS wrapping used by the atrest tests: AES-256-GCM [nonce][ct][tag] with a fixed AAD.
func unwrap(kek, w []byte, aad string) []byte { return gcmOpen(kek, w, []byte(aad)) }

func fields(b []byte) map[int][][]byte {
	m := map[int][][]byte{}
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		b = b[n:]
		no, wt := int(tag>>3), tag&7
		if wt == 0 {
			v, n := binary.Uvarint(b)
			b = b[n:]
			m[no] = append(m[no], []byte{byte(v)})
			continue
		}
		l, n := binary.Uvarint(b)
		b = b[n:]
		m[no] = append(m[no], b[:l])
		b = b[l:]
	}
	return m
}

func main() {
	aad := []byte("/registry/secrets/default/secret1")
	want := []byte("pandas are the best")
	failed := false
	for _, line := range strings.Split(strings.TrimSpace(os.Args[1]), "\n") {
		parts := strings.Fields(line)
		name := parts[0]
		v, _ := hex.DecodeString(parts[1])
		var got []byte
		switch {
		case strings.HasPrefix(name, "aescbc-") || strings.HasPrefix(name, "aesgcm-") || strings.HasPrefix(name, "secretbox-"):
			prov := strings.Split(name, "-")[0]
			bits := map[string]int{"256": 32, "128": 16}[strings.Split(name, "-")[1]]
			prefix := "k8s:enc:" + prov + ":v1:key1:"
			if !bytes.HasPrefix(v, []byte(prefix)) {
				panic(name)
			}
			body := v[len(prefix):]
			key := secret(fmt.Sprintf("%s-%d", prov, bits), bits)
			switch prov {
			case "aescbc":
				got = cbcOpen(key, body)
			case "aesgcm":
				got = gcmOpen(key, body, aad)
			case "secretbox":
				var n [24]byte
				var k [32]byte
				copy(n[:], body[:24])
				copy(k[:], key)
				var ok bool
				got, ok = secretbox.Open(nil, body[24:], &n, &k)
				if !ok {
					panic("secretbox")
				}
			}
		case strings.HasPrefix(name, "kms-v1"):
			body := v[len("k8s:enc:kms:v1:golden:"):]
			l := int(binary.BigEndian.Uint16(body))
			dek := unwrap(secret("kms-v1 kek", 32), body[2:2+l], "fake-kms-v1")
			if name == "kms-v1" {
				got = gcmOpen(dek, body[2+l:], aad)
			} else {
				got = cbcOpen(dek, body[2+l:])
			}
		case name == "kms-v2":
			f := fields(v[len("k8s:enc:kms:v2:golden:"):])
			keyID := string(f[2][0])
			seed := unwrap(secret("kms-v2 kek", 32), f[3][0], keyID)
			ed := f[1][0]
			mac := hmac.New(sha256.New, seed)
			mac.Write(ed[:32])
			mac.Write([]byte{1})
			got = gcmOpen(mac.Sum(nil), ed[32:], aad)
			fmt.Printf("  kms-v2 keyID=%s type=%v annotations=%d\n", keyID, f[5], len(f[4]))
		}
		ok := bytes.Equal(got, want)
		fmt.Println(name, ok)
		if !ok {
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
