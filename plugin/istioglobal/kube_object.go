package istioglobal

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// cachedEntry is what the informer cache keeps of a ServiceEntry: the Entry that the table reads,
// converted once when the object arrives, and the resourceVersion. It is a metav1.Object and a
// runtime.Object only as far as client-go's cache uses them (namespace and name for keys and
// the namespace index): the rest of the metadata reads as empty and cannot be set, as in
// CoreDNS's kubernetes plugin, whose cache keeps its own slim types too.
type cachedEntry struct {
	Entry
	resourceVersion string
}

// toCachedEntry is the informers' transform. It keeps only what the table reads, so that the cache
// of 100k ServiceEntries holds no endpoints, annotations, managedFields or API structs.
func toCachedEntry(obj any) (any, error) {
	se, ok := obj.(*networkingv1.ServiceEntry)
	if !ok {
		return obj, nil // a tombstone, or a cachedEntry already
	}
	e := entryFrom(se)
	if v, ok := se.Labels[optOutLabel]; ok {
		e.Labels = map[string]string{optOutLabel: v}
	} else {
		e.Labels = nil
	}
	return &cachedEntry{Entry: e, resourceVersion: se.ResourceVersion}, nil
}

// What client-go reads.
func (c *cachedEntry) GetNamespace() string              { return c.Namespace }
func (c *cachedEntry) GetName() string                   { return c.Name }
func (c *cachedEntry) GetResourceVersion() string        { return c.resourceVersion }
func (c *cachedEntry) GetCreationTimestamp() metav1.Time { return metav1.NewTime(c.Created) }
func (c *cachedEntry) GetLabels() map[string]string      { return c.Labels }
func (c *cachedEntry) GetObjectKind() schema.ObjectKind  { return schema.EmptyObjectKind }

// DeepCopyObject copies what a reader could change; the slices are shared, as no one writes them.
func (c *cachedEntry) DeepCopyObject() runtime.Object { cp := *c; return &cp }

// The rest of metav1.Object: empty, and not settable.
func (*cachedEntry) SetNamespace(string)                           {}
func (*cachedEntry) SetName(string)                                {}
func (*cachedEntry) GetGenerateName() string                       { return "" }
func (*cachedEntry) SetGenerateName(string)                        {}
func (*cachedEntry) GetUID() types.UID                             { return "" }
func (*cachedEntry) SetUID(types.UID)                              {}
func (*cachedEntry) SetResourceVersion(string)                     {}
func (*cachedEntry) GetGeneration() int64                          { return 0 }
func (*cachedEntry) SetGeneration(int64)                           {}
func (*cachedEntry) GetSelfLink() string                           { return "" }
func (*cachedEntry) SetSelfLink(string)                            {}
func (*cachedEntry) SetCreationTimestamp(metav1.Time)              {}
func (*cachedEntry) GetDeletionTimestamp() *metav1.Time            { return nil }
func (*cachedEntry) SetDeletionTimestamp(*metav1.Time)             {}
func (*cachedEntry) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (*cachedEntry) SetDeletionGracePeriodSeconds(*int64)          {}
func (*cachedEntry) SetLabels(map[string]string)                   {}
func (*cachedEntry) GetAnnotations() map[string]string             { return nil }
func (*cachedEntry) SetAnnotations(map[string]string)              {}
func (*cachedEntry) GetFinalizers() []string                       { return nil }
func (*cachedEntry) SetFinalizers([]string)                        {}
func (*cachedEntry) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (*cachedEntry) SetOwnerReferences([]metav1.OwnerReference)    {}
func (*cachedEntry) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (*cachedEntry) SetManagedFields([]metav1.ManagedFieldsEntry)  {}

var (
	_ metav1.Object  = (*cachedEntry)(nil)
	_ runtime.Object = (*cachedEntry)(nil)
)
