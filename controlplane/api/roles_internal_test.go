package api

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/store"
)

// TestUnlistedRouteIsAdminOnly: a route added without a rule in routeRoles is refused to every
// role but admin, reads included.
func TestUnlistedRouteIsAdminOnly(t *testing.T) {
	const admin = "efa_admin"
	st := store.NewMemory()
	defer st.Close()
	tk := auth.New(st, sha256.Sum256([]byte(admin)))
	_, op, err := tk.Create(t.Context(), "op", auth.Operator, "test")
	if err != nil {
		t.Fatal(err)
	}
	h := &handlers{tokens: tk, sess: newSessionStore()}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	ok := func(c *gin.Context) { c.Status(http.StatusNoContent) }
	e.POST("/api/v1/zz-unlisted", h.auth, ok)
	e.GET("/api/v1/zz-unlisted", h.auth, ok)
	for _, method := range []string{"GET", "POST"} {
		if _, listed := routeRoles[method+" /api/v1/zz-unlisted"]; listed {
			t.Fatal("the test route is in the table")
		}
		for _, c := range []struct {
			token string
			want  int
		}{{"", 401}, {op, 403}, {admin, 204}} {
			req := httptest.NewRequest(method, "/api/v1/zz-unlisted", nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			w := httptest.NewRecorder()
			e.ServeHTTP(w, req)
			if w.Code != c.want {
				t.Errorf("%s with token %.8q: %d, want %d", method, c.token, w.Code, c.want)
			}
		}
	}
}
