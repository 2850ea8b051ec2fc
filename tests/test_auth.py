from conftest import PASSWORD, login


def test_login_with_right_password_reaches_dashboard(client, admin):
    response = login(client, admin.email)
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Dashboard" in page and admin.email in page


def test_wrong_password_and_unknown_email_get_the_same_message(client, admin):
    wrong_password = login(client, admin.email, "not-the-password")
    unknown_email = login(client, "nobody@example.test", PASSWORD)
    for response in (wrong_password, unknown_email):
        assert response.status_code == 401
        assert "Email or password is wrong." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still logged out


def test_logged_out_user_is_sent_to_login_for_every_page(client, admin):
    for path in ("/", "/customers/", "/customers/1"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login")


def test_login_without_csrf_token_is_refused(client, admin):
    response = client.post("/login", data={"email": admin.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "Reload the page and try again" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_logout_ends_the_session(client, admin):
    login(client, admin.email)
    page = client.get("/").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_login_never_redirects_to_another_site(client, admin):
    import re

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/login?next=https://evil.example/", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_sidebar_has_every_section(logged_in):
    page = logged_in.get("/").get_data(as_text=True)
    for label in ("Dashboard", "Customers", "SMS history", "New message", "Broadcasts", "Maintenance",
                  "Transactions", "Plugins"):
        assert label in page
