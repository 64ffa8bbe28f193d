package bridge

import "testing"

func TestBehind(t *testing.T) {
	for _, tc := range []struct {
		head, pos Position
		want      uint64
	}{
		{Position{10}, Position{10}, 0},
		{Position{10}, Position{4}, 6},
		{Position{10, 20, 30}, Position{10, 15, 29}, 6},
		{Position{10, 20}, Position{12, 15}, 5},    // past the head in one partition: read meanwhile
		{Position{10, 20, 3}, Position{10, 20}, 3}, // a partition the reader has not met yet
		{Position{}, Position{5}, 0},
	} {
		if got := behind(tc.head, tc.pos); got != tc.want {
			t.Errorf("behind(%v, %v) = %d, want %d", tc.head, tc.pos, got, tc.want)
		}
	}
}
