// Prints the Kubernetes protobuf storage encoding (what kube-apiserver writes to etcd before
// encryption) of the Secret, ConfigMap and Deployment used in test/etcd/k8s-object.test.ts.
// Run: cd test/etcd/testdata/k8s-storage-vectors && GOFLAGS=-mod=mod go run .
package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

func main() {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = appsv1.AddToScheme(scheme)
	s := protobuf.NewSerializer(scheme, scheme)
	ts := metav1.NewTime(time.Unix(1767225600, 0))
	secret := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: "prod", UID: "6f1c2a9e-0d4b-4c1e-9a57-3b2d8f0e1c42", CreationTimestamp: ts, Labels: map[string]string{"app": "db", "tier": "backend"}, Annotations: map[string]string{"owner": "team-a"}},
		Data:       map[string][]byte{"password": []byte("hunter2"), "user": []byte("admin")},
		Type:       corev1.SecretTypeOpaque,
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "default", UID: "11111111-2222-3333-4444-555555555555", CreationTimestamp: ts},
		Data:       map[string]string{"mode": "fast", "level": "3"},
		BinaryData: map[string][]byte{"blob": {0, 1, 2, 255}},
	}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Generation: 3, CreationTimestamp: ts},
	}
	for _, o := range []runtime.Object{secret, cm, dep} {
		var buf bytes.Buffer
		if err := s.Encode(o, &buf); err != nil {
			panic(err)
		}
		fmt.Println(hex.EncodeToString(buf.Bytes()))
	}
}
