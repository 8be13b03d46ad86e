// What is specific to the k8s.io/apiserver v0.28 line (kube-apiserver 1.27/1.28, the last line whose KMS
// v2 health probe accepts only the Status version "v2beta1"): its version, the Status versions it
// accepts, its LoadEncryptionConfig signature, what its clients send as :authority, and the
// (gogo-protobuf) EncryptedObject type.
package conformance

import (
	"context"

	"github.com/gogo/protobuf/proto"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

const apiserverLine = "v0.28.15"

// Neither client sets :authority; grpc-go (v1.56 in this line) sends the socket path as it is, unescaped
// (the value Node's stock HTTP/2 server refuses, spec §8b), like the 1.10-1.28 v1 envelope service.
func expectedAuthority(_, socket string) string {
	return socket
}

// The Status versions this line's KMS v2 health probe accepts: exactly KMSAPIVersion ("v2beta1").
var acceptedStatusVersions = []string{kmsv2.KMSAPIVersion}

// loadEncryptionConfig calls encryptionconfig.LoadEncryptionConfig as kube-apiserver does (no automatic
// reload); this line has no API server id argument.
func loadEncryptionConfig(ctx context.Context, path, _ string) (*encryptionconfig.EncryptionConfiguration, error) {
	return encryptionconfig.LoadEncryptionConfig(ctx, path, false)
}

type encryptedObject struct {
	EncryptedData      []byte
	KeyID              string
	EncryptedDEKSource []byte
	Annotations        map[string][]byte
	SourceType         int32
}

func decodeEncryptedObject(b []byte) (encryptedObject, error) {
	var o kmstypes.EncryptedObject
	if err := proto.Unmarshal(b, &o); err != nil {
		return encryptedObject{}, err
	}
	return encryptedObject{o.EncryptedData, o.KeyID, o.EncryptedDEKSource, o.Annotations, int32(o.EncryptedDEKSourceType)}, nil
}

func encodeEncryptedObject(e encryptedObject) ([]byte, error) {
	return proto.Marshal(&kmstypes.EncryptedObject{
		EncryptedData: e.EncryptedData, KeyID: e.KeyID, EncryptedDEKSource: e.EncryptedDEKSource,
		Annotations: e.Annotations, EncryptedDEKSourceType: kmstypes.EncryptedDEKSourceType(e.SourceType),
	})
}

// encryptedObjectForValidation shapes an EncryptResponse the way GenerateTransformer does before
// calling ValidateEncryptedObject.
func encryptedObjectForValidation(res *kmsservice.EncryptResponse) *kmstypes.EncryptedObject {
	return &kmstypes.EncryptedObject{
		EncryptedData: []byte{0}, KeyID: res.KeyID, EncryptedDEKSource: res.Ciphertext, Annotations: res.Annotations,
		EncryptedDEKSourceType: kmstypes.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED,
	}
}
