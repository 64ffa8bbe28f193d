package bridge

import (
	"slices"
	"testing"
)

func TestBehind(t *testing.T) {
	for _, tc := range []struct {
		head, pos Position
		want      []uint64
	}{
		{Position{10}, Position{10}, []uint64{0}},
		{Position{10}, Position{4}, []uint64{6}},
		{Position{10, 20, 30}, Position{10, 15, 29}, []uint64{0, 5, 1}},
		{Position{10, 20}, Position{12, 15}, []uint64{0, 5}},       // past the head in one partition: read meanwhile
		{Position{10, 20, 3}, Position{10, 20}, []uint64{0, 0, 3}}, // a partition the reader has not met yet
		{Position{}, Position{5}, []uint64{}},
	} {
		if got := behind(tc.head, tc.pos); !slices.Equal(got, tc.want) {
			t.Errorf("behind(%v, %v) = %v, want %v", tc.head, tc.pos, got, tc.want)
		}
	}
}
