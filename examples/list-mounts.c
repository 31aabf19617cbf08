/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * list-mounts: the smallest client of a running hotmountd, through the public
 * API only. Build: cc list-mounts.c $(pkg-config --cflags --libs hotmount)
 *
 *   list-mounts INSTANCE
 */
#include <hotmount/hotmount.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s INSTANCE\n", argv[0]);
    return 2;
  }
  char *dir = NULL, *sock = NULL;
  hm_client *client = NULL;
  hm_mount_list *list = NULL;
  hm_error *err = NULL;
  int rc = 1;
  if (hm_instance_dir_resolve(&dir, argv[1], &err) < 0)
    goto out;
  if (asprintf(&sock, "%s/hotmountd.sock", dir) < 0)
    goto out;
  if (hm_client_new(&client, sock, &err) < 0 || hm_client_list(client, &list, &err) < 0)
    goto out;
  for (size_t i = 0; i < hm_mount_list_count(list); i++) {
    const hm_mount *m = hm_mount_list_get(list, i);
    printf("%s\t%s\t%s\t%s\n", hm_mount_get_guest_path(m), hm_mount_get_host_path(m),
           hm_mount_type_name(hm_mount_get_type(m)), hm_mount_state_name(hm_mount_get_state(m)));
  }
  rc = 0;
out:
  if (err)
    fprintf(stderr, "list-mounts: %s\n", hm_error_message(err));
  hm_error_free(err);
  hm_mount_list_free(list);
  hm_client_free(client);
  free(sock);
  free(dir);
  return rc;
}
