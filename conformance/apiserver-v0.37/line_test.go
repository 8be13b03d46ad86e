// What is specific to the k8s.io/apiserver v0.37 line: its version, what its clients send as
// :authority, and the (protobuf-go) EncryptedObject type.
package conformance

import (
	"context"
	"net/url"

	"google.golang.org/protobuf/proto"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

const apiserverLine = "v0.37.2"

// The v2 client pins :authority to "localhost" (since 1.32); the v1 client lets grpc-go derive it from
// the socket path, which current grpc-go percent-encodes.
func expectedAuthority(api, socket string) string {
	if api == "v2" {
		return "localhost"
	}
	return url.PathEscape(socket)
}

// The Status versions this line's KMS v2 health probe accepts.
var acceptedStatusVersions = []string{kmsv2.KMSAPIVersionv2, kmsv2.KMSAPIVersionv2beta1}

// loadEncryptionConfig calls encryptionconfig.LoadEncryptionConfig as kube-apiserver does (no automatic
// reload; this line also takes the API server id).
func loadEncryptionConfig(ctx context.Context, path, apiServerID string) (*encryptionconfig.EncryptionConfiguration, error) {
	return encryptionconfig.LoadEncryptionConfig(ctx, path, false, apiServerID)
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
